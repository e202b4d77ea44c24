"""The setup page's own certificate: the PIN never crosses the network in clear.

A device in a meter cupboard has no name a public CA would certify, so `meter-edge setup` makes a
self-signed certificate on its first run (an EC P-256 key, mode 0600, in `state_dir`) and keeps it, so its
SHA-256 fingerprint stays the same from one setup to the next. The command prints the fingerprint beside
the PIN (terminal and journal); the browser warns about a certificate it does not know and shows the
same fingerprint under the certificate's details: the installer compares the two before typing the PIN.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from edge.files import write_private

KEY_NAME = "setup-tls.key"
CERT_NAME = "setup-tls.crt"
VALID_DAYS = 3650


@dataclass(frozen=True)
class SetupCertificate:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the DER certificate, "AB:CD:…" as browsers show it
    created: bool


def fingerprint_of(cert_pem: bytes) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode("ascii"))
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def local_addresses() -> list[str]:
    """This device's address on the network it would reach the internet by (no packet is sent)."""
    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route's source address
        found.append(s.getsockname()[0])
    return [a for a in found if not a.startswith("0.")]


def ensure_certificate(state_dir: Path, device_id: str, addresses: list[str] | None = None) -> SetupCertificate:
    """The key and certificate in `state_dir`, made on the first run; an unreadable or expired pair is
    made again (and the new fingerprint printed, as always)."""
    state_dir = Path(state_dir)
    key_path, cert_path = state_dir / KEY_NAME, state_dir / CERT_NAME
    if key_path.is_file() and cert_path.is_file():
        try:
            pem = cert_path.read_bytes()
            if _still_valid(pem) and key_path.stat().st_mode & 0o077 == 0:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(cert_path, key_path)  # the two belong together
                return SetupCertificate(cert_path, key_path, fingerprint_of(pem), created=False)
        except (OSError, ValueError, ssl.SSLError):
            pass
    state_dir.mkdir(parents=True, exist_ok=True)
    key_pem, cert_pem = _make(device_id, addresses if addresses is not None else local_addresses())
    write_private(key_path, key_pem)
    cert_path.write_bytes(cert_pem)
    return SetupCertificate(cert_path, key_path, fingerprint_of(cert_pem), created=True)


def _still_valid(cert_pem: bytes) -> bool:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=30)


def _make(device_id: str, addresses: list[str]) -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname() or "localhost"
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([host, f"{host}.local", "localhost"])]
    for a in dict.fromkeys([*addresses, "127.0.0.1"]):
        with contextlib.suppress(ValueError):
            names.append(x509.IPAddress(ipaddress.ip_address(a)))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"meter-edge setup {device_id}"[:64])])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
