"""Run a private Mosquitto with the project's own config (tests, demo, benchmarks).

The config in `config/mosquitto/` is the one a server uses; a private broker gets it with the port,
data directory and account files filled in, runs in the foreground (so its pid is the broker's) and
is stopped by that pid.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "config" / "mosquitto"


class BrokerError(RuntimeError):
    pass


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None)
    if path is None:
        raise BrokerError(
            "mosquitto is not installed: run `make install` (as root it runs apt-get install mosquitto), "
            "or `sudo apt-get install mosquitto mosquitto-clients`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_config(
    *,
    port: int,
    data_dir: Path,
    password_file: Path | None = None,
    acl_file: Path | None = None,
    bind_address: str = "127.0.0.1",
    template: Path = CONFIG_DIR / "mosquitto.conf",
) -> str:
    """The project's broker config with this broker's paths. Without a password file the broker
    takes anonymous clients (a loopback test broker) and has no ACL."""
    text = template.read_text(encoding="utf-8")
    auth = password_file is not None
    text = text.format(
        port=port,
        bind_address=bind_address,
        data_dir=data_dir,
        allow_anonymous="false" if auth else "true",
        password_file=password_file or "",
        acl_file=acl_file or "",
    )
    if not auth:
        text = "\n".join(
            line for line in text.splitlines() if not line.startswith(("password_file", "acl_file")))
    if os.geteuid() == 0:
        # As root Mosquitto would switch to the `mosquitto` user, who cannot write our data dir.
        text += f"\nuser {getpass.getuser()}\n"
    return text


class MosquittoBroker:
    """A private broker on a free loopback port; a context manager that stops it by pid.

    `auth=True` turns on the password file and ACL (copied from config/mosquitto/acl unless given).
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        auth: bool = False,
        acl_file: Path | None = None,
        password_file: Path | None = None,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        self.auth = auth
        self.data_dir = self.work_dir / "data"
        self.conf_path = self.work_dir / "mosquitto.conf"
        self.log_path = self.work_dir / "mosquitto.log"
        self.password_file = password_file or self.work_dir / "passwd"
        self.acl_file = acl_file or self.work_dir / "acl"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.auth:
            if not self.acl_file.exists():
                shutil.copy(CONFIG_DIR / "acl", self.acl_file)
            self.password_file.touch(exist_ok=True)
            os.chmod(self.password_file, 0o600)
        self.conf_path.write_text(render_config(
            port=self.port,
            data_dir=self.data_dir,
            password_file=self.password_file if self.auth else None,
            acl_file=self.acl_file if self.auth else None,
        ))

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        self.write_config()
        exe = find_mosquitto()
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [exe, "-c", str(self.conf_path)], stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"mosquitto exited with {self.proc.returncode}: {self.tail_log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout}s: {self.tail_log()}")

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def reload(self) -> None:
        """SIGHUP: reread the password and ACL files (after `meter-bridge devices add`)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: what arrived since the last autosave is lost, as in a power cut."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
