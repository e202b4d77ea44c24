"""Serve the sandbox with uvicorn: in the foreground (`meter-bridge sandbox`) or in a thread (tests).

The listening socket is bound before uvicorn starts, so port 0 picks a free port and `.url` is known
at once."""

from __future__ import annotations

import csv
import re
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

import uvicorn

from cloud_bridge.sandbox.app import PAYER_PATTERN, SERIAL_PATTERN, Accounts, create_app
from cloud_bridge.sandbox.faults import FaultBoard
from cloud_bridge.sandbox.store import SandboxStore


class AccountsError(ValueError):
    pass


def load_accounts(path: Path) -> Accounts:
    """CSV `payer_code,meter_serial`, one pair per line; a header line is allowed."""
    accounts: Accounts = {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for lineno, row in enumerate(csv.reader(f), start=1):
                if not row or not "".join(row).strip() or row[0].strip().startswith("#"):
                    continue
                if len(row) != 2:
                    raise AccountsError(f"{path}:{lineno}: expected `payer_code,meter_serial`, got {row!r}")
                payer, serial = row[0].strip(), row[1].strip()
                if lineno == 1 and payer == "payer_code":
                    continue
                if not re.match(PAYER_PATTERN, payer) or not re.match(SERIAL_PATTERN, serial):
                    raise AccountsError(
                        f"{path}:{lineno}: payer code must be 10 digits and the serial [A-Za-z0-9._-], got {row!r}")
                accounts.setdefault(payer, set()).add(serial)
    except OSError as exc:
        raise AccountsError(f"cannot read accounts file {path}: {exc.strerror}") from None
    return accounts


class SandboxServer:
    """One sandbox: its store, fault board and a uvicorn server on `host:port` (0: a free port)."""

    def __init__(
        self,
        db_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Accounts | None = None,
        token: str | None = None,
        loyalty_token: str | None = None,
        faults: FaultBoard | None = None,
    ) -> None:
        self.store = SandboxStore(db_path)
        self.faults = faults if faults is not None else FaultBoard()
        self.app = create_app(self.store, accounts=accounts, token=token, loyalty_token=loyalty_token,
                              faults=self.faults)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", access_log=False,
                                                     lifespan="off", timeout_graceful_shutdown=2))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def serve_forever(self) -> None:
        """Run in this thread until SIGINT/SIGTERM (uvicorn handles the signals in the main thread)."""
        try:
            self._server.run(sockets=[self.sock])
        finally:
            self.store.close()

    def start(self) -> SandboxServer:
        """Serve from a background thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self.sock]},
                                        name="sandbox", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start (see the log above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True  # a test may leave a slow answer in flight
            self._thread.join(timeout=10)
            self._thread = None
        self.sock.close()
        self.store.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
