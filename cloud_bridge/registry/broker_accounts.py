"""Mosquitto accounts for devices: the password file entry and the ACL patterns.

Passwords are hashed in Mosquitto 2's own format (`$7$` = PBKDF2-SHA512, 101 iterations, 12-byte
salt, base64), computed here with hashlib so no `mosquitto_passwd` is needed on the bridge's host.
The broker reads both files at start and on SIGHUP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from cloud_bridge.broker import CONFIG_DIR

PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
# The device rules every password-file account relies on (%u = user name = device id).
DEVICE_PATTERNS = (
    "pattern write meters/%u/reading",
    "pattern write meters/%u/status",
    "pattern write meters/%u/telemetry",
    "pattern read meters/%u/cmd/#",
    "pattern read meters/%u/ack",
)
RESERVED_USERS = frozenset({"bridge", "operator"})


def new_password() -> str:
    return secrets.token_urlsafe(18)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt = base64.b64decode(parts[3])
    return secrets.compare_digest(hash_password(password, salt=salt, iterations=int(parts[2])), encoded)


def _atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = path.stat() if path.exists() else None
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, keep.st_mode & 0o777 if keep else mode)
        if keep is not None and os.geteuid() == 0:
            os.chown(tmp, keep.st_uid, keep.st_gid)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_users(password_file: Path) -> dict[str, str]:
    if not password_file.exists():
        return {}
    users: dict[str, str] = {}
    for line in password_file.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#") and ":" in line:
            user, _, encoded = line.partition(":")
            users[user] = encoded
    return users


def set_password(password_file: Path, user: str, password: str) -> None:
    """Add or replace `user` in the password file, keeping every other line as it was."""
    entry = f"{user}:{hash_password(password)}"
    lines = password_file.read_text(encoding="utf-8").splitlines() if password_file.exists() else []
    out = [line for line in lines if line.partition(":")[0] != user]
    out.append(entry)
    _atomic_write(password_file, "\n".join(out) + "\n")


def ensure_acl(acl_file: Path) -> list[str]:
    """Make sure the ACL file has the device patterns; a missing file starts from the project's ACL.
    Returns the lines added (empty when nothing changed)."""
    if not acl_file.exists():
        acl_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CONFIG_DIR / "acl", acl_file)
        return list(DEVICE_PATTERNS)
    text = acl_file.read_text(encoding="utf-8")
    have = {" ".join(line.split()) for line in text.splitlines()}
    missing = [p for p in DEVICE_PATTERNS if p not in have]
    if missing:
        # Patterns apply to every user wherever they stand in the file, so appending is enough.
        sep = "" if text.endswith("\n") or not text else "\n"
        _atomic_write(acl_file, text + sep + "# device patterns (meter-bridge devices add)\n"
                      + "\n".join(missing) + "\n", mode=0o644)
    return missing
