"""Run a private Mosquitto with the project's own config (tests, demo, benchmarks).

The config in `config/mosquitto/` is the one a server uses; a private broker gets it with the port,
data directory and account files filled in, runs in the foreground (so its pid is the broker's) and
is stopped by that pid.
"""

from __future__ import annotations

import getpass
import glob
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cloud_bridge.accounts import add_account, add_device_account
from cloud_bridge.accounts.dynsec import DynSecAdmin, import_password_file, initial_config, new_password

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


def find_dynsec_plugin() -> str:
    """Mosquitto's dynamic-security plugin (Debian's `mosquitto` package ships it)."""
    found = sorted(glob.glob("/usr/lib/*/mosquitto_dynamic_security.so")) + [
        p for p in ("/usr/lib/mosquitto_dynamic_security.so", "/usr/local/lib/mosquitto_dynamic_security.so")
        if os.path.exists(p)]
    if not found:
        raise BrokerError("Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) was not found: "
                          "install Mosquitto 2.0 or newer (`apt-get install mosquitto`)")
    return found[0]


@dataclass(frozen=True)
class TlsListener:
    """A TLS listener beside the loopback one (devices on the network)."""

    port: int
    certfile: Path
    keyfile: Path
    bind_address: str = "127.0.0.1"


def render_config(
    *,
    port: int,
    data_dir: Path,
    dynsec_file: Path | None = None,
    bind_address: str = "127.0.0.1",
    tls: TlsListener | None = None,
    template: Path = CONFIG_DIR / "mosquitto.conf",
) -> str:
    """The project's broker config with this broker's paths. Without a dynamic-security file the broker
    takes anonymous clients (a loopback test broker) and has no ACL."""
    text = template.read_text(encoding="utf-8")
    auth = dynsec_file is not None
    text = text.format(
        port=port,
        bind_address=bind_address,
        data_dir=data_dir,
        allow_anonymous="false" if auth else "true",
        dynsec_plugin=find_dynsec_plugin() if auth else "",
        dynsec_file=dynsec_file or "",
    )
    if not auth:
        text = "\n".join(line for line in text.splitlines() if not line.startswith("plugin"))
    if tls is not None:
        text += (f"\n\nlistener {tls.port} {tls.bind_address}\nprotocol mqtt\ncertfile {tls.certfile}\n"
                 f"keyfile {tls.keyfile}\ntls_version tlsv1.2\n")
    if os.geteuid() == 0:
        # As root Mosquitto would switch to the `mosquitto` user, who cannot write our data dir.
        text += f"\nuser {getpass.getuser()}\n"
    return text


def write_secret(path: Path, text: str) -> None:
    """Write a secret so that it is never readable by others, also when the file existed with 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def init_dynsec(dynsec_file: Path, admin_password_file: Path, *, admin_user: str = "broker-admin",
                import_passwd: Path | None = None) -> list[str]:
    """Write the plugin's first file (the admin account, and the accounts of an old Mosquitto password
    file when given) and the admin password, both mode 600. Refuses to overwrite an existing plugin
    file: it holds every account. Returns what the import skipped and why."""
    if dynsec_file.exists():
        raise BrokerError(f"{dynsec_file} exists already: it holds the broker's accounts; remove it yourself if "
                          "you really mean to start over")
    imported, skipped = import_password_file(import_passwd) if import_passwd is not None else ([], [])
    password = new_password()
    write_secret(dynsec_file, json.dumps(initial_config(password, admin_user, imported), indent=2) + "\n")
    write_secret(admin_password_file, password + "\n")
    return skipped


class MosquittoBroker:
    """A private broker on a free loopback port; a context manager that stops it by pid.

    `auth=True` turns on accounts (dynamic security): the admin account's password is written to
    `admin_password_file`, and `admin()` connects as it to add accounts. `tls=True` adds a TLS listener
    on `tls_port` with the given certificate and key.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        auth: bool = False,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        self.auth = auth
        self.data_dir = self.work_dir / "data"
        self.conf_path = self.work_dir / "mosquitto.conf"
        self.log_path = self.work_dir / "mosquitto.log"
        self.dynsec_file = self.work_dir / "dynamic-security.json"
        self.admin_user = "broker-admin"
        self.admin_password_file = self.work_dir / "admin-password"
        self.tls = (TlsListener(free_port(), tls_cert, tls_key) if tls_cert is not None and tls_key is not None
                    else None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def tls_port(self) -> int | None:
        return self.tls.port if self.tls else None

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work_dir, 0o700)
        if self.auth and not self.dynsec_file.exists():
            init_dynsec(self.dynsec_file, self.admin_password_file, admin_user=self.admin_user)
        self.conf_path.write_text(render_config(
            port=self.port,
            data_dir=self.data_dir,
            dynsec_file=self.dynsec_file if self.auth else None,
            tls=self.tls,
        ))

    def admin(self) -> DynSecAdmin:
        """A connection as the admin account (use it as a context manager)."""
        if not self.auth:
            raise BrokerError("this broker has no accounts (auth=False)")
        password = self.admin_password_file.read_text(encoding="utf-8").strip()
        return DynSecAdmin("127.0.0.1", self.port, self.admin_user, password)

    def add_account(self, name: str, role: str, password: str | None = None) -> str:
        """Create an account of `role` (bridge, operator, homeassistant, or `device`); its password."""
        with self.admin() as admin:
            made = add_device_account(admin, name) if role == "device" else add_account(admin, name, role)  # type: ignore[arg-type]
            if password is not None:
                admin.set_password(name, password)
                made = password
        return made

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        self.write_config()
        exe = find_mosquitto()
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [exe, "-c", str(self.conf_path)], stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, umask=0o077)
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
        """SIGHUP: reread the config (accounts change live, through the plugin, without it)."""
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
