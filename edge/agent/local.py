"""Requests from this device to its own running agent: a file in `state_dir`, then SIGHUP.

`cmd/reload` and `cmd/set-value` come over MQTT from the operator; the installer's setup page runs on
the device itself and must reach the agent without the broker (a new device may have no network to it
yet) and without its account. So the page writes `setup-request.json` (a reload and, optionally, the
meter's starting value) beside the outbox and sends the agent SIGHUP (`systemctl reload meter-edge` does
the same: `ExecReload=`). The agent applies it on its main loop with the very code of the two MQTT
commands and answers in `setup-request.result.json`, naming the request's id. A plain SIGHUP without a
request file is a reload. A request written while no agent runs is applied when the agent starts.

The running agent holds an exclusive `flock` on `agent.pid` (which holds its pid): a pid file left by a
dead agent, or a pid reused by another process, is never mistaken for a running agent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contract.parse import loads_strict
from contract.payloads import COMMAND_ID_PATTERN, SetValueCommand, UtcTime
from edge.files import write_private

PID_NAME = "agent.pid"
REQUEST_NAME = "setup-request.json"
RESULT_NAME = "setup-request.result.json"
MAX_REQUEST_BYTES = 4096

Outcome = Literal["done", "refused", "not asked"]


class LocalRequest(BaseModel):
    """What the setup page asks of the agent: reload the config and layout, then set the previous value."""

    model_config = ConfigDict(extra="forbid", strict=True)
    id: str = Field(pattern=COMMAND_ID_PATTERN)
    reload: bool = True
    set_value: SetValueCommand | None = None


class LocalResult(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None
    reload: Outcome
    reload_reason: str | None = None
    set_value: Outcome
    set_value_reason: str | None = None
    pid: int
    at: UtcTime


# -- the agent's side ---------------------------------------------------------------------------
class PidLock:
    """`agent.pid` with this process's pid, flock'ed while the agent runs."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / PID_NAME
        self._file: IO[str] | None = None
        self.other: int | None = None  # another live agent's pid when the lock was taken already
        self.error: str | None = None

    def acquire(self) -> bool:
        """False when another agent holds it (`other`), or the file cannot be written (`error`)."""
        try:
            f = open(self.path, "a+")  # noqa: SIM115 - held open while the agent runs
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror or exc}"
            return False
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            text = f.read().strip()
            self.other = int(text) if text.isdigit() else None
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f
        return True

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()
        self._file = None


def take_request(state_dir: Path) -> LocalRequest | str | None:
    """The pending request (removed from disk), None when there is none, or why it was refused."""
    path = Path(state_dir) / REQUEST_NAME
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_REQUEST_BYTES + 1)
    except FileNotFoundError:
        return None
    finally:
        path.unlink(missing_ok=True)
    if len(raw) > MAX_REQUEST_BYTES:
        return f"{REQUEST_NAME} is larger than {MAX_REQUEST_BYTES} bytes"
    try:
        return LocalRequest.model_validate(loads_strict(raw))
    except (ValueError, RecursionError, ValidationError) as exc:
        return f"{REQUEST_NAME} is not a valid request: {str(exc).splitlines()[0][:200]}"


def write_result(state_dir: Path, result: LocalResult) -> None:
    write_private(Path(state_dir) / RESULT_NAME, result.model_dump_json().encode())


# -- the setup page's side ----------------------------------------------------------------------
def running_agent(state_dir: Path) -> int | None:
    """The pid of the agent running on this `state_dir`, or None (no pid file, or nobody holds its lock)."""
    path = Path(state_dir) / PID_NAME
    try:
        f = open(path)  # noqa: SIM115
    except FileNotFoundError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(f, fcntl.LOCK_UN)
        return None


@dataclass(frozen=True)
class Answer:
    """What became of a request: `confirmed` (the agent answered: see `result`), `pending` (no agent runs:
    it applies the request when it starts), `no answer` (signalled, no answer in time), `not allowed`."""

    status: Literal["confirmed", "pending", "no answer", "not allowed"]
    detail: str
    result: LocalResult | None = None
    pid: int | None = None


def send_request(state_dir: Path, request: LocalRequest) -> Answer:
    """Write the request and signal the running agent, if any; does not wait (see `wait_for_answer`)."""
    state_dir = Path(state_dir)
    (state_dir / RESULT_NAME).unlink(missing_ok=True)
    write_private(state_dir / REQUEST_NAME, request.model_dump_json().encode())
    pid = running_agent(state_dir)
    if pid is None:
        return Answer("pending", "no agent is running on this device: it applies the layout and the starting value "
                                 "when it starts (sudo systemctl start meter-edge)")
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        return Answer("not allowed", f"the agent (pid {pid}) runs as another user, so this page may not signal it: "
                                     "run `sudo systemctl reload meter-edge` (the request waits for it), and start "
                                     "setup as the service's user next time (sudo -u meter)", pid=pid)
    except ProcessLookupError:
        return Answer("pending", "the agent stopped just now: it applies the request when it starts", pid=pid)
    return Answer("no answer", f"asked the agent (pid {pid}); waiting for its answer", pid=pid)


def read_result(state_dir: Path, request_id: str) -> LocalResult | None:
    try:
        raw = (Path(state_dir) / RESULT_NAME).read_bytes()[:MAX_REQUEST_BYTES * 2]
        result = LocalResult.model_validate(json.loads(raw))
    except (OSError, ValueError, ValidationError):
        return None
    return result if result.id == request_id else None


def answer_from(result: LocalResult) -> Answer:
    parts = []
    if result.reload == "done":
        parts.append("reloaded the config and layout")
    elif result.reload == "refused":
        parts.append(f"did NOT reload: {result.reload_reason}")
    if result.set_value == "done":
        parts.append("set the starting value")
    elif result.set_value == "refused":
        parts.append(f"did NOT set the starting value: {result.set_value_reason}")
    return Answer("confirmed", f"the agent (pid {result.pid}) " + "; ".join(parts), result, result.pid)


def tell_agent(state_dir: Path, request: LocalRequest, timeout_s: float = 20.0) -> Answer:
    """Blocking: send the request and wait up to `timeout_s` for the agent's answer."""
    sent = send_request(state_dir, request)
    if sent.status != "no answer":
        return sent
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = read_result(state_dir, request.id)
        if result is not None:
            return answer_from(result)
        time.sleep(0.05)
    return Answer("no answer", f"the agent (pid {sent.pid}) did not answer within {timeout_s:g} s; the request "
                               "stays until it does (see `journalctl -u meter-edge`)", pid=sent.pid)


def result_now(request_id: str | None, reload: Outcome, reload_reason: str | None, set_value: Outcome,
               set_value_reason: str | None, at: datetime) -> LocalResult:
    return LocalResult(id=request_id, reload=reload, reload_reason=reload_reason, set_value=set_value,
                       set_value_reason=set_value_reason, pid=os.getpid(), at=at)
