"""Broker accounts on RabbitMQ (the fleet broker), through its management HTTP API.

The same rights as on Mosquitto (`roles.py` is the one place that says what each account may do),
written as RabbitMQ permissions:

- topic permissions on `amq.topic` (where the MQTT plugin routes every topic, `/` becoming `.`): a
  device may publish (`write`) and subscribe (`read`) exactly the topics of its `device_acls`, each
  MQTT filter turned into a regular expression over routing keys;
- vhost permissions: the MQTT plugin keeps a client's subscriptions in queues named
  `mqtt-subscription-<client id>qos0|1`; a device may create and read only its own, and publish to
  `amq.topic`.

Differences from Mosquitto's dynamic security (docs/operate-city-scale.md): RabbitMQ does not tie a
client id to an account (a device could connect with another's id and so disconnect it, though it
cannot read its queue), and it does not disconnect a deleted user by itself (`remove` closes its
connections). Passwords are sent as RabbitMQ's salted SHA-256 hash, never in clear.

Retained messages are not in the management API: RabbitMQ 3.x keeps them in a store on each node and
delivers none to a wildcard subscription. So a retired device's retained topics are cleared by name
(`retired_topics`) with an empty retained publish over MQTT 3.1.1, as the admin, on every node's MQTT
listener (`broker.mqtt_nodes`, or those the management API reports).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import ssl
import threading
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_bridge.accounts.dynsec import new_password
from cloud_bridge.accounts.roles import (
    ADMIN_ROLE,
    ROLE_ACLS,
    ROLES,
    AccountError,
    Acl,
    check_account_name,
    device_acls,
)
from contract import topics

log = logging.getLogger(__name__)

EXCHANGE = "amq.topic"
HASHING = "rabbit_password_hashing_sha256"
TEXT_TAG = "meter-bridge"


def password_hash(password: str) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256` form: base64(salt + sha256(salt + password)), 4-byte salt.
    Sent instead of the password, so the password itself never crosses the wire."""
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode()


def filter_regex(mqtt_filter: str) -> str:
    """An MQTT topic filter as a regular expression over RabbitMQ routing keys (levels joined by `.`).

    `+` is one level; `#` any number of levels (also none). A subscription's own wildcards reach
    RabbitMQ as `*` and `#` in the binding key, and `[^.]+` / `.*` match those too."""
    out = []
    levels = mqtt_filter.split("/")
    for i, level in enumerate(levels):
        sep = r"\." if i else ""
        if level == "#":
            out.append(rf"({sep}.*)?" if i else ".*")
        elif level == "+":
            out.append(sep + r"[^.]+")
        else:
            out.append(sep + re.escape(level))
    return "".join(out)


def _alternatives(filters: list[str]) -> str:
    return "^(" + "|".join(filter_regex(f) for f in filters) + ")$" if filters else "^$"


def topic_permissions(acls: list[Acl]) -> dict[str, str]:
    """Write/read regular expressions on amq.topic for a role's ACLs (what it may send; subscribe to)."""
    write = [a.topic for a in acls if a.acltype == "publishClientSend" and a.allow]
    read = [a.topic for a in acls if a.acltype == "subscribePattern" and a.allow and not a.topic.startswith("$")]
    return {"exchange": EXCHANGE, "write": _alternatives(write), "read": _alternatives(read)}


def vhost_permissions(client_id_pattern: str, *, extra_queues: str | None = None) -> dict[str, str]:
    """Configure/write/read: its own MQTT subscription queues (and `extra_queues`), publish to amq.topic."""
    own = rf"mqtt-subscription-{client_id_pattern}qos[01]"
    queues = f"{own}|{extra_queues}" if extra_queues else own
    return {"configure": f"^({queues})$", "write": rf"^(amq\.topic|{queues})$", "read": rf"^(amq\.topic|{queues})$"}


# The bridge's workers (client ids bridge-<i>) also declare, bind and consume the bridge.* queues.
ROLE_QUEUES = {"bridge": r"bridge\.[A-Za-z0-9_.-]+"}
_WILDCARD_OR_LOOPBACK = {"", "::", "0.0.0.0", "127.0.0.1", "::1"}


def retired_topics(device_id: str) -> list[str]:
    """What a retired device leaves retained: its status (and last will), telemetry, state, the bridge's
    dashboard state of it (not retained on RabbitMQ, cleared all the same) and its HA discovery configs."""
    return [*topics.device_retained(device_id), *topics.ha_configs(device_id)]


def role_of(name: str, tags: list[str], topic_perms: dict[str, Any] | None) -> str:
    """The role an account's permissions are those of (`device`, a ROLE, the admin role), or `-`."""
    if "administrator" in tags:
        return ADMIN_ROLE
    if not topic_perms:
        return "-"
    have = {k: topic_perms.get(k) for k in ("exchange", "write", "read")}
    try:
        if have == topic_permissions(device_acls(name)):
            return "device"
    except ValueError:  # not a device id
        pass
    return next((role for role in ROLES if have == topic_permissions(ROLE_ACLS[role])), "-")


class RabbitMqAdmin:
    """The management API as the broker's admin account (use it as a context manager)."""

    def __init__(self, url: str, username: str, password: str, *, vhost: str = "/", ca_file: str | None = None,
                 timeout_s: float = 10.0, mqtt_nodes: list[str] | None = None,
                 mqtt_ca_file: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.vhost = vhost
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self.mqtt_nodes = list(mqtt_nodes or [])
        self.mqtt_ca_file = mqtt_ca_file
        self.warnings: list[str] = []  # what the last retire_device could not do (a node not reached)
        self._client = httpx.Client(base_url=self.url, auth=(username, password), timeout=timeout_s,
                                    verify=ca_file if ca_file else True)

    def __enter__(self) -> RabbitMqAdmin:
        self._call("GET", "/api/whoami")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kw: Any) -> httpx.Response:
        try:
            r = self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise AccountError(f"cannot reach the RabbitMQ management API at {self.url} ({exc}): check "
                               "broker.management_url and that the rabbitmq_management plugin is on") from None
        if r.status_code == 401:
            raise AccountError(f"the RabbitMQ management API refused {self.username!r}: check broker.admin_username "
                               "and broker.admin_password_file")
        if r.status_code not in ok:
            raise AccountError(f"RabbitMQ refused {method} {path}: {r.status_code} {r.text[:200]}")
        return r

    def _vh(self) -> str:
        return quote(self.vhost, safe="")

    # -- accounts -------------------------------------------------------------------------------
    def get_user(self, name: str) -> dict[str, Any] | None:
        r = self._call("GET", f"/api/users/{quote(name, safe='')}", ok=(200, 404))
        return dict(r.json()) if r.status_code == 200 else None

    def put_user(self, name: str, password: str, *, tags: str = "") -> None:
        self._call("PUT", f"/api/users/{quote(name, safe='')}",
                   json={"password_hash": password_hash(password), "hashing_algorithm": HASHING, "tags": tags})

    def set_permissions(self, name: str, vhost_perms: dict[str, str], topic_perms: dict[str, str]) -> None:
        user = quote(name, safe="")
        self._call("PUT", f"/api/permissions/{self._vh()}/{user}", json=vhost_perms)
        self._call("PUT", f"/api/topic-permissions/{self._vh()}/{user}", json=topic_perms)

    def permissions(self, name: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        user = quote(name, safe="")
        r = self._call("GET", f"/api/permissions/{self._vh()}/{user}", ok=(200, 404))
        t = self._call("GET", f"/api/users/{user}/topic-permissions", ok=(200, 404))
        return (r.json() if r.status_code == 200 else None), (t.json() if t.status_code == 200 else [])

    def close_connections(self, name: str) -> int:
        """Close every connection of user `name` (RabbitMQ keeps them open when the user is deleted)."""
        n = 0
        for c in self._call("GET", "/api/connections").json():
            if c.get("user") == name:
                self._call("DELETE", f"/api/connections/{quote(c['name'], safe='')}", ok=(200, 204, 404),
                           headers={"X-Reason": "account removed by meter-bridge"})
                n += 1
        return n

    def delete_queue(self, name: str) -> bool:
        r = self._call("DELETE", f"/api/queues/{self._vh()}/{quote(name, safe='')}", ok=(200, 204, 404))
        return r.status_code != 404

    def list_users(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/users").json())

    def list_accounts(self) -> list[tuple[str, str, str | None]]:
        """(user, role, client id it must use) for every user; the role is read back from its topic
        permissions on this vhost (`-`: none of the roles' rights, e.g. made by hand)."""
        perms = {p.get("user"): p for p in self._call("GET", f"/api/vhosts/{self._vh()}/topic-permissions",
                                                       ok=(200, 404)).json() or []
                 if isinstance(p, dict) and p.get("exchange") == EXCHANGE}
        out = []
        for u in self.list_users():
            name = str(u.get("name"))
            tags = u.get("tags") or []
            tags = tags if isinstance(tags, list) else [t for t in str(tags).split(",") if t]
            role = role_of(name, tags, perms.get(name))
            client_id = name if role == "device" or (role in ROLES and role != "bridge") else None
            out.append((name, role, client_id))
        return sorted(out, key=lambda a: (a[1], a[0]))

    # -- retained messages (per node on RabbitMQ 3.x) -------------------------------------------
    def mqtt_listeners(self) -> list[tuple[str, int]]:
        """Every node's MQTT listener: `broker.mqtt_nodes`, else what the management API reports (the TLS
        one when mqtt_ca_file is set), at the listener's own address unless that is a wildcard or loopback,
        then at the node's host name (rabbit@HOST)."""
        if self.mqtt_nodes:
            return [(h.strip("[]"), int(p)) for h, _, p in (n.rpartition(":") for n in self.mqtt_nodes)]
        want = "mqtt/ssl" if self.mqtt_ca_file else "mqtt"
        found = set()
        for lst in self._call("GET", "/api/overview").json().get("listeners") or []:
            if lst.get("protocol") != want:
                continue
            ip = str(lst.get("ip_address") or "")
            host = ip if ip not in _WILDCARD_OR_LOOPBACK else str(lst.get("node", "")).partition("@")[2]
            if host:
                found.add((host, int(lst["port"])))
        return sorted(found)

    def clear_retained(self, topic_names: list[str]) -> list[str]:
        """An empty retained message (MQTT's way to delete one) on each topic, on every node's MQTT listener
        as the admin account. Returns what could not be done, one line per node (empty: all done)."""
        listeners = self.mqtt_listeners()
        if not listeners:
            return ["no MQTT listener reported by the management API: set broker.mqtt_nodes (HOST:PORT of each "
                    "node) to clear retained topics"]
        problems = []
        for host, port in listeners:
            try:
                self._clear_on(host, port, topic_names)
            except AccountError as exc:
                problems.append(f"{host}:{port}: {exc}")
        return problems

    def _clear_on(self, host: str, port: int, topic_names: list[str]) -> None:
        connack: list[Any] = []
        gone = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{self.username}-{uuid.uuid4().hex[:8]}",
                        protocol=mqtt.MQTTv311, clean_session=True)
        c.username_pw_set(self.username, self._password)
        if self.mqtt_ca_file:
            c.tls_set(ca_certs=self.mqtt_ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        c.on_connect = lambda _c, _u, _f, rc, _p=None: connack.append(rc)
        c.on_disconnect = lambda *_a: gone.set()
        try:
            c.connect(host, port, keepalive=30)
        except OSError as exc:
            raise AccountError(f"cannot reach it ({exc.strerror or exc})") from None
        c.loop_start()
        try:
            deadline = time.monotonic() + self.timeout_s
            while not connack and time.monotonic() < deadline:
                time.sleep(0.01)
            if not connack or connack[0].is_failure:
                why = connack[0] if connack else "no answer"
                raise AccountError(f"MQTT login as {self.username!r} refused ({why})")
            infos = [c.publish(t, b"", qos=1, retain=True) for t in topic_names]
            for info in infos:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not all(i.is_published() for i in infos) or gone.is_set():
                raise AccountError("the node did not confirm clearing the retained topics")
        finally:
            c.disconnect()
            c.loop_stop()

    # -- what the command line does -------------------------------------------------------------
    def add_device(self, device_id: str, *, reissue: bool = False) -> str:
        """A device's account: rights only on its own topics and its own session queues."""
        topics._check(device_id)
        if self.get_user(device_id) is not None and not reissue:
            raise AccountError(f"the broker has an account {device_id!r} already: choose another device id, or "
                               "remove the leftover account first")
        password = new_password()
        self.put_user(device_id, password)
        self.set_permissions(device_id, vhost_permissions(re.escape(device_id)),
                             topic_permissions(device_acls(device_id)))
        return password

    def add_role_account(self, name: str, role: str) -> str:
        if role not in ROLE_ACLS or role.startswith("broker"):
            raise AccountError(f"unknown role {role!r}")
        check_account_name(name, role=role)
        if self.get_user(name) is not None:
            raise AccountError(f"account {name!r} exists already")
        password = new_password()
        self.put_user(name, password)
        client_ids = r"bridge-[0-9]+" if role == "bridge" else re.escape(name)
        self.set_permissions(name, vhost_permissions(client_ids, extra_queues=ROLE_QUEUES.get(role)),
                             topic_permissions(ROLE_ACLS[role]))
        return password

    def rotate(self, name: str) -> str:
        user = self.get_user(name)
        if user is None:
            raise AccountError(f"no broker account {name!r}")
        password = new_password()
        tags = user.get("tags") or []
        self.put_user(name, password, tags=",".join(tags) if isinstance(tags, list) else str(tags))
        return password

    def remove(self, name: str) -> bool:
        """Delete the account, close its connections and drop its MQTT session queues."""
        gone = self.get_user(name) is not None
        if gone:
            self._call("DELETE", f"/api/users/{quote(name, safe='')}", ok=(200, 204, 404))
        closed = self.close_connections(name)
        for qos in (0, 1):
            self.delete_queue(f"mqtt-subscription-{name}qos{qos}")
        if closed:
            log.info("closed %d connection(s) of %s", closed, name)
        return gone

    def retire_device(self, device_id: str) -> list[str]:
        """Revoke the device's account (closing its connections), then clear its retained topics on every
        node (`retired_topics`); returns them. A node that could not be reached keeps its copies: said in
        `warnings`, the account is revoked all the same."""
        self.remove(device_id)
        time.sleep(0.5)  # the closed connection's last will (`offline`, retained) lands before we clear it
        cleared = retired_topics(device_id)
        self.warnings = self.clear_retained(cleared)
        for w in self.warnings:
            log.warning("retained topics of %s not cleared on %s", device_id, w)
        return cleared
