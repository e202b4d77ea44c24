"""What each broker account may do, as Mosquitto dynamic-security ACLs (one place for every role).

Dynamic security checks a SUBSCRIBE when it arrives (`subscribePattern`), what a client may send
(`publishClientSend`) and what it may be delivered (`publishClientReceive`). Anything not granted is
denied (`DEFAULT_ACL_ACCESS`). Mosquitto 2.0's plugin does not substitute `%u` in ACL topics, so each
device gets a role of its own, `device-<id>`, with its id written out.

Client ids are tied to accounts: every account except the bridge must connect with its user name as
client id; the bridge's workers use `bridge-<i>` and no other account may be named so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from contract import topics

AclType = Literal["publishClientSend", "publishClientReceive", "subscribePattern", "subscribeLiteral",
                  "unsubscribePattern", "unsubscribeLiteral"]
Role = Literal["operator", "homeassistant", "bridge"]
ROLES: tuple[Role, ...] = ("operator", "homeassistant", "bridge")

ADMIN_ROLE = "broker-admin"
DEVICE_ROLE_PREFIX = "device-"
# HA discovery components a device may announce (sensor, binary_sensor, button) and nothing else.
HA_COMPONENTS = ("sensor", "binary_sensor", "button")
DEFAULT_ACL_ACCESS = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False,
                      "unsubscribe": True}
# User names an operator may not give an account or a device: the broker's own accounts, and the
# bridge's worker client ids (`bridge-0`, `bridge-1`, …), so no account can take a worker's session.
RESERVED_NAMES = frozenset({"bridge", "operator", "homeassistant", "broker-admin", "admin"})
RESERVED_PREFIXES = ("bridge-", "broker-", DEVICE_ROLE_PREFIX + "role-")
_NAME_RE = re.compile(rf"^{topics.DEVICE_ID_PATTERN}$")


@dataclass(frozen=True)
class Acl:
    acltype: AclType
    topic: str
    allow: bool = True
    priority: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"acltype": self.acltype, "topic": self.topic, "priority": self.priority, "allow": self.allow}


def _read(*filters: str) -> list[Acl]:
    """Subscribe to these filters and be delivered what matches them."""
    out: list[Acl] = []
    for f in filters:
        out += [Acl("subscribePattern", f), Acl("publishClientReceive", f)]
    return out


def _write(*filters: str) -> list[Acl]:
    return [Acl("publishClientSend", f) for f in filters]


def device_acls(device_id: str) -> list[Acl]:
    """A device: its own `meters/<id>/…` topics, its HA discovery configs, HA's birth message."""
    d = topics.METERS + "/" + topics._check(device_id)
    return [
        *_write(f"{d}/{topics.READING}", f"{d}/{topics.STATUS}", f"{d}/{topics.TELEMETRY}", f"{d}/{topics.STATE}",
                f"{d}/{topics.CMD}/+/{topics.CMD_RESULT}"),
        *_write(*(f"{topics.HA_DISCOVERY_PREFIX}/{c}/{device_id}/+/config" for c in HA_COMPONENTS)),
        # Its own retained state (to pick up where it left off) and HA discovery (to clear stale configs).
        *_read(f"{d}/{topics.CMD}/+", f"{d}/{topics.ACK}", f"{d}/{topics.STATE}", topics.HA_STATUS),
    ]


ROLE_ACLS: dict[str, list[Acl]] = {
    # Ingest (shared subscription), device status, fleet state; answers devices.
    "bridge": [
        *_read(topics.shared_readings(), topics.ALL_READINGS, topics.ALL_STATUS,
               f"{topics.METERS}/+/{topics.TELEMETRY}", f"{topics.METERS}/+/{topics.STATE}", f"{topics.BRIDGE}/#"),
        *_write(f"{topics.METERS}/+/{topics.ACK}", f"{topics.BRIDGE}/#"),
    ],
    # People and their tools: read the whole fleet, send commands, read the answers.
    "operator": [
        *_read(f"{topics.METERS}/#", f"{topics.BRIDGE}/#", f"{topics.HA_DISCOVERY_PREFIX}/#"),
        *_write(f"{topics.METERS}/+/{topics.CMD}/+"),
    ],
    # Home Assistant: discovery, device state/status/telemetry, its birth message, the read-now buttons.
    "homeassistant": [
        *_read(f"{topics.HA_DISCOVERY_PREFIX}/#", f"{topics.METERS}/+/{topics.STATE}", topics.ALL_STATUS,
               f"{topics.METERS}/+/{topics.TELEMETRY}"),
        *_write(topics.HA_STATUS, f"{topics.METERS}/+/{topics.CMD}/capture", f"{topics.METERS}/+/{topics.CMD}/reload"),
    ],
    # The account `meter-bridge` manages the others with; it also clears a retired device's retained
    # topics (status, telemetry, state, HA discovery, the bridge's dashboard state of it).
    ADMIN_ROLE: [
        *_read("$CONTROL/dynamic-security/#"),
        *_write("$CONTROL/dynamic-security/#"),
        *_read(f"{topics.HA_DISCOVERY_PREFIX}/+/+/+/config", f"{topics.METERS}/+/{topics.STATUS}",
               f"{topics.METERS}/+/{topics.TELEMETRY}", f"{topics.METERS}/+/{topics.STATE}"),
        *_write(f"{topics.HA_DISCOVERY_PREFIX}/+/+/+/config", f"{topics.METERS}/+/{topics.STATUS}",
                f"{topics.METERS}/+/{topics.TELEMETRY}", f"{topics.METERS}/+/{topics.STATE}",
                f"{topics.BRIDGE}/devices/+/state"),
    ],
}


class AccountError(ValueError):
    """A request about broker accounts that cannot be done; the message says why and what to do."""


def check_account_name(name: str, *, role: str | None = None) -> str:
    """A user name that is a valid topic level and client id, and not one of the reserved ones
    (the role's own name is allowed for that role: `accounts add bridge --role bridge`)."""
    if not _NAME_RE.match(name):
        raise AccountError(f"name {name!r} is not valid: use 1-64 of A-Z a-z 0-9 _ - "
                           "(it becomes a broker user name and client id)")
    if role is not None and name == role:
        return name
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise AccountError(f"name {name!r} is reserved for the broker's own accounts and the bridge's worker "
                           "client ids (bridge-*); choose another")
    return name


def client_id_for(name: str, role: str) -> str | None:
    """The client id an account must use; None (any) only for the bridge, whose workers are bridge-<i>."""
    return None if role == "bridge" else name
