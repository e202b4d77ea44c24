"""Commands an installer or operator sends on `meters/{id}/cmd/{name}`, parsed or refused with a reason.

Parsing is pure: a refused command changes nothing, and the reason goes to the log and telemetry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from contract import topics
from contract.parse import loads_strict
from contract.payloads import COMMAND_ID_PATTERN, SetValueCommand

MAX_COMMAND_BYTES = 4096
_COMMAND_ID_RE = re.compile(COMMAND_ID_PATTERN)
CommandName = Literal["capture", "reload", "set-value"]


@dataclass(frozen=True)
class Command:
    name: CommandName
    set_value: SetValueCommand | None = None
    id: str | None = None  # echoed in the answer on meters/{id}/cmd/{name}/result


@dataclass(frozen=True)
class Refused:
    name: str
    reason: str
    id: str | None = None

    def __str__(self) -> str:
        return f"command {self.name!r} refused: {self.reason}"


def parse_command(device_id: str, topic: str, payload: bytes, *, retained: bool = False) -> Command | Refused:
    """`capture` and `reload` take an empty payload or any JSON object; `set-value` takes
    `{"value": "00123.456"}` (a decimal string, optionally with `"at"`)."""
    parsed = topics.parse_device_topic(topic)
    if parsed is None or parsed.kind != topics.CMD or parsed.device_id != device_id or parsed.name is None:
        return Refused(topic[-64:], "not a command topic of this device")
    name = parsed.name
    if name not in topics.COMMANDS:
        return Refused(name[:64], f"unknown command (known: {', '.join(topics.COMMANDS)})")
    if retained:
        return Refused(name, "retained command ignored (it would run again on every reconnect); "
                             "publish commands without the retain flag")
    if len(payload) > MAX_COMMAND_BYTES:
        return Refused(name, f"payload of {len(payload)} bytes is larger than {MAX_COMMAND_BYTES}")
    data: object = None
    if payload.strip():
        try:
            data = loads_strict(payload)
        except (ValueError, RecursionError) as exc:
            return Refused(name, f"bad JSON: {str(exc)[:120]}")
        if not isinstance(data, dict):
            return Refused(name, f"payload must be a JSON object, got {type(data).__name__}")
    cmd_id = data.get("id") if isinstance(data, dict) else None
    if cmd_id is not None and not (isinstance(cmd_id, str) and _COMMAND_ID_RE.match(cmd_id)):
        return Refused(name, f"id must match {COMMAND_ID_PATTERN}")
    if name == "set-value":
        if data is None:
            return Refused(name, 'needs a payload like {"value": "00123.456"}')
        try:
            cmd = SetValueCommand.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "(payload)"
            hint = ' (value must be a decimal string like "00123.456")' if field == "value" else (
                " (at: ISO 8601 with a zone, e.g. 2026-11-24T17:00:00Z, not before 2000, at most a day ahead)"
                if field == "at" else "")
            return Refused(name, f"{field}: {first['msg']}{hint}"[:400], cmd_id)
        return Command("set-value", cmd, cmd_id)
    return Command(name, None, cmd_id)  # type: ignore[arg-type]
