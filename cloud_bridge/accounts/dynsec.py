"""Mosquitto's dynamic-security plugin: its first config file, and a client for its control API.

Why this plugin and not `password_file` + `acl_file` (docs/decisions.md): Mosquitto 2.0's ACL file
grants every SUBSCRIBE and checks only at delivery, so a device could join the bridge's shared
subscription and swallow its share of every reading; and it cannot tie a client id to an account.
The plugin refuses the SUBSCRIBE itself (SUBACK 0x87) and refuses a CONNECT whose client id is not the
account's.

The plugin reads its JSON file only at start and rewrites it itself on every change, so accounts are
changed through its control topic (`$CONTROL/dynamic-security/v1`) on the running broker, with the
admin account made by `initial_config`. Changes apply at once; no reload is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import ssl
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_bridge.accounts.roles import (
    ADMIN_ROLE,
    DEFAULT_ACL_ACCESS,
    DEVICE_ROLE_PREFIX,
    ROLE_ACLS,
    AccountError,
    Acl,
    check_account_name,
    client_id_for,
    device_acls,
)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"
PBKDF2_ITERATIONS = 101
ADMIN_USER = "broker-admin"


def new_password() -> str:
    return secrets.token_urlsafe(18)


def _hashed(password: str) -> dict[str, Any]:
    """The plugin's stored form: PBKDF2-SHA512 of the password, salt and iterations in base64."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, PBKDF2_ITERATIONS)
    return {"password": base64.b64encode(digest).decode(), "salt": base64.b64encode(salt).decode(),
            "iterations": PBKDF2_ITERATIONS}


def initial_config(admin_password: str, admin_user: str = ADMIN_USER,
                   imported: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The plugin's first JSON file: everything denied, one admin account that manages the rest, and
    the accounts `import_password_file` carried over."""
    clients = [{"username": admin_user, "textname": "meter-bridge account management",
                "roles": [{"rolename": ADMIN_ROLE}], **_hashed(admin_password)}]
    roles: dict[str, list[Acl]] = {ADMIN_ROLE: ROLE_ACLS[ADMIN_ROLE]}
    for c in imported or []:
        clients.append(c["client"])
        roles[c["rolename"]] = c["acls"]
    return {
        "defaultACLAccess": dict(DEFAULT_ACL_ACCESS),
        "clients": clients,
        "groups": [],
        "roles": [{"rolename": name, "acls": [a.as_json() for a in acls]} for name, acls in roles.items()],
    }


def import_password_file(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Accounts from a Mosquitto 2 password file (the one `devices add` wrote before dynamic security):
    its `$7$` PBKDF2-SHA512 hashes are the plugin's own format, so every device keeps its password.
    `bridge` and `operator` get those roles, every other valid name is a device. Returns (accounts,
    what was skipped and why)."""
    out: list[dict[str, Any]] = []
    skipped: list[str] = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        user, _, encoded = line.partition(":")
        parts = encoded.strip().split("$")
        if len(parts) != 5 or parts[1] != "7" or not parts[2].isdigit():
            skipped.append(f"line {n} ({user}): not a $7$ hash; give it a new password after the import")
            continue
        role = user if user in ("bridge", "operator") else None
        try:
            check_account_name(user, role=role)
        except AccountError as exc:
            skipped.append(f"line {n}: {exc}")
            continue
        rolename = role or DEVICE_ROLE_PREFIX + user
        acls = ROLE_ACLS[role] if role else device_acls(user)
        client: dict[str, Any] = {"username": user, "textname": f"imported from {path.name}",
                                  "roles": [{"rolename": rolename}], "password": parts[4], "salt": parts[3],
                                  "iterations": int(parts[2])}
        client_id = client_id_for(user, role or "device")
        if client_id:
            client["clientid"] = client_id
        out.append({"client": client, "rolename": rolename, "acls": acls})
    return out, skipped


class DynSecError(AccountError):
    pass


class DynSecAdmin:
    """One connection to the broker as the admin account; `call()` sends commands, returns answers."""

    def __init__(self, host: str, port: int, username: str, password: str, *, ca_file: str | None = None,
                 timeout_s: float = 10.0) -> None:
        self.host, self.port, self.timeout_s = host, port, timeout_s
        self._answers: dict[str, dict[str, Any]] = {}
        self._retained: dict[str, bytes] = {}
        self._pubacks: dict[int, int] = {}
        self._cond = threading.Condition()
        self._connack: Any = None
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{username}-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.username = username

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        self._connack = rc
        if not rc.is_failure:
            client.subscribe(RESPONSE_TOPIC, qos=1)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != RESPONSE_TOPIC:
            if msg.retain:
                with self._cond:
                    self._retained[msg.topic] = bytes(msg.payload)
            return
        try:
            responses = json.loads(msg.payload)["responses"]
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            for r in responses:
                if isinstance(r, dict) and "correlationData" in r:
                    self._answers[r["correlationData"]] = r
            self._cond.notify_all()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any = None, _p: Any = None) -> None:
        with self._cond:
            self._pubacks[mid] = int(getattr(rc, "value", 0))
            self._cond.notify_all()

    def __enter__(self) -> DynSecAdmin:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise DynSecError(
                f"cannot reach the broker at {self.host}:{self.port} ({exc.strerror or exc}): accounts are managed "
                "on the running broker; start it, or check mqtt.host/mqtt.port in the bridge config") from None
        self.client.loop_start()
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline and not self._subscribed.is_set():
            if self._connack is not None and self._connack.is_failure:
                self.client.loop_stop()
                raise DynSecError(
                    f"the broker refused the admin account {self.username!r} ({self._connack}): check "
                    "broker.admin_username and broker.admin_password_file in the bridge config")
            time.sleep(0.01)
        if not self._subscribed.is_set():
            self.close()
            raise DynSecError(f"no answer from the broker at {self.host}:{self.port} within {self.timeout_s:.0f}s")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def call(self, command: str, *, allow_error: tuple[str, ...] = (), **args: Any) -> dict[str, Any]:
        """Run one command; its answer (with `data` where it returns some). An error answer raises
        unless its text contains one of `allow_error`."""
        corr = uuid.uuid4().hex
        payload = json.dumps({"commands": [{"command": command, "correlationData": corr, **args}]})
        self.client.publish(CONTROL_TOPIC, payload, qos=1)
        with self._cond:
            if not self._cond.wait_for(lambda: corr in self._answers, timeout=self.timeout_s):
                raise DynSecError(f"the broker did not answer {command} within {self.timeout_s:.0f}s: is the "
                                  "dynamic-security plugin loaded (config/mosquitto/mosquitto.conf)?")
            answer = self._answers.pop(corr)
        error = answer.get("error")
        if error and not any(e in error for e in allow_error):
            raise DynSecError(f"the broker refused {command}: {error}")
        return answer

    # -- the commands this project uses ------------------------------------------------------------
    def ensure_role(self, rolename: str, acls: list[Acl]) -> None:
        """Create the role, or bring an existing one's ACLs to exactly `acls` (an upgrade adds topics)."""
        got = self.call("getRole", rolename=rolename, allow_error=("not found",))
        if got.get("error"):
            self.call("createRole", rolename=rolename, acls=[a.as_json() for a in acls])
            return
        have = {(a["acltype"], a["topic"]): a for a in got.get("data", {}).get("role", {}).get("acls", [])}
        want = {(a.acltype, a.topic): a for a in acls}
        for key, a in have.items():
            w = want.get(key)
            if w is None or w.allow != a.get("allow") or w.priority != a.get("priority"):
                self.call("removeRoleACL", rolename=rolename, acltype=key[0], topic=key[1])
        for key, w in want.items():
            h = have.get(key)
            if h is None or w.allow != h.get("allow") or w.priority != h.get("priority"):
                self.call("addRoleACL", rolename=rolename, **w.as_json())

    def get_client(self, username: str) -> dict[str, Any] | None:
        got = self.call("getClient", username=username, allow_error=("not found",))
        return None if got.get("error") else dict(got.get("data", {}).get("client", {}))

    def create_client(self, username: str, password: str, *, rolename: str, clientid: str | None,
                      textname: str = "") -> None:
        args: dict[str, Any] = {"username": username, "password": password, "textname": textname,
                                "roles": [{"rolename": rolename}]}
        if clientid is not None:
            args["clientid"] = clientid
        self.call("createClient", **args)

    def set_password(self, username: str, password: str) -> None:
        self.call("setClientPassword", username=username, password=password)

    def delete_client(self, username: str) -> bool:
        """Delete (and disconnect) the account; False when there was none."""
        got = self.call("deleteClient", username=username, allow_error=("not found",))
        return not got.get("error")

    def delete_role(self, rolename: str) -> None:
        self.call("deleteRole", rolename=rolename, allow_error=("not found",))

    def list_clients(self) -> list[dict[str, Any]]:
        got = self.call("listClients", verbose=True)
        return list(got.get("data", {}).get("clients", []))

    # -- retained topics (a retired device's status, telemetry, state and HA discovery) ------------
    def retained(self, topic_filter: str, *, settle_s: float = 0.5) -> dict[str, bytes]:
        """The retained messages under `topic_filter` (they arrive right after the SUBACK)."""
        with self._cond:
            self._retained.clear()
        done = threading.Event()
        prev = self.client.on_subscribe
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic_filter, qos=1)
        try:
            if not done.wait(self.timeout_s):
                raise DynSecError(f"the broker did not answer the subscription to {topic_filter}")
            time.sleep(settle_s)
        finally:
            self.client.unsubscribe(topic_filter)
            self.client.on_subscribe = prev
        with self._cond:
            return {t: p for t, p in self._retained.items() if p}

    def clear_retained(self, topic_names: list[str]) -> None:
        """Publish an empty retained message on each topic (MQTT's way to delete a retained one)."""
        mids = []
        for t in topic_names:
            info = self.client.publish(t, b"", qos=1, retain=True)
            mids.append(info.mid)
        with self._cond:
            if not self._cond.wait_for(lambda: all(m in self._pubacks for m in mids), timeout=self.timeout_s):
                raise DynSecError("the broker did not confirm clearing the retained topics")
            refused = [t for t, m in zip(topic_names, mids, strict=True) if self._pubacks[m] >= 0x80]
        if refused:
            raise DynSecError(f"the broker refused clearing {', '.join(refused)} (check the {ADMIN_ROLE} role)")
