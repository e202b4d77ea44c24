"""Issue 20 item 10: a TLS listener for real. A CA and a server certificate made here with openssl, the
broker's second listener with them, the agent connecting with `mqtt.ca_file`; a plain connection and a
client that does not trust the CA get nothing."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from agent_helpers import AgentThread, add_accounts, edge_config

from cloud_bridge.broker import MosquittoBroker

pytestmark = [pytest.mark.mosquitto,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca_and_server_cert(d: Path, name: str = "ca") -> tuple[Path, Path, Path]:
    """(ca.crt, server.crt, server.key): a throwaway CA and a server certificate for 127.0.0.1."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=test {name}",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key",
             "-out", "server.csr", cwd=d)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", f"{name}.crt", "-CAkey", f"{name}.key", "-CAcreateserial",
             "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=d)
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return d / f"{name}.crt", d / "server.crt", d / "server.key"


@pytest.fixture
def tls_broker(tmp_path: Path) -> Any:
    ca, cert, key = make_ca_and_server_cert(tmp_path / "pki")
    with MosquittoBroker(tmp_path / "broker", auth=True, tls_cert=cert, tls_key=key) as b:
        b.ca = ca  # type: ignore[attr-defined]
        yield b


def _connack(port: int, user: str, password: str, *, ca: Path | None) -> Any:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    if ca is not None:
        c.tls_set(ca_certs=str(ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
    got: list[Any] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: got.append(rc)
    try:
        c.connect("127.0.0.1", port, keepalive=5)
        for _ in range(60):
            c.loop(0.05)
            if got:
                break
    except (OSError, ssl.SSLError) as exc:
        return exc
    finally:
        c.disconnect()
    return got[0] if got else None


def test_agent_publishes_over_tls_and_plain_is_refused(tls_broker: MosquittoBroker, tmp_path: Path,
                                                       collector_factory: Any) -> None:
    add_accounts(tls_broker, {"dev-a": "pw-a-secret", "bridge": "pw-br-secret"})
    port = tls_broker.tls_port
    assert port is not None
    ackr = collector_factory(tls_broker.port, ["meters/+/reading"], bridge=True, user="bridge",
                             password="pw-br-secret", client_id="bridge-acker")
    (tmp_path / "pw").write_text("pw-a-secret\n")
    (tmp_path / "pw").chmod(0o600)
    cfg = edge_config(tmp_path, port, mqtt={"password_file": str(tmp_path / "pw"), "ca_file": str(tls_broker.ca)})  # type: ignore[attr-defined]
    AgentThread(cfg, cycles=3).start().join(20)
    assert ackr.wait_for(lambda: len(ackr.seqs()) >= 3), "no reading arrived over TLS"

    # A plain MQTT client on the TLS port gets no CONNACK (the broker wants a TLS handshake first).
    plain = _connack(port, "dev-a", "pw-a-secret", ca=None)
    assert plain is None or isinstance(plain, OSError), f"plain MQTT on the TLS listener got {plain}"
    # A client that does not trust this CA refuses the broker's certificate.
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other", name="other")
    assert isinstance(_connack(port, "dev-a", "pw-a-secret", ca=other_ca), ssl.SSLError)
    # TLS is no way around the accounts: a wrong password is refused there too.
    wrong = _connack(port, "dev-a", "nope", ca=tls_broker.ca)  # type: ignore[attr-defined]
    assert wrong is not None and not isinstance(wrong, Exception) and wrong.is_failure


def test_tls_listener_speaks_tls_only(tls_broker: MosquittoBroker) -> None:
    """Raw bytes of an MQTT CONNECT on the TLS port: the broker closes without answering MQTT."""
    assert tls_broker.tls_port is not None
    with socket.create_connection(("127.0.0.1", tls_broker.tls_port), timeout=5) as s:
        s.sendall(bytes([0x10, 0x10, 0x00, 0x04]) + b"MQTT" + bytes([0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x00]))
        try:
            answer = s.recv(16)
        except (ConnectionResetError, TimeoutError):
            answer = b""
    assert not answer.startswith(b"\x20"), "the TLS listener answered a plain CONNECT with a CONNACK"
