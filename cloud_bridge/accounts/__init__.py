"""Broker accounts (devices, the bridge, operators, Home Assistant) on Mosquitto's dynamic security,
or on RabbitMQ (the fleet broker) through its management API.

`roles.py` says what each role may do; `dynsec.py` talks to Mosquitto's plugin, `rabbitmq.py` to
RabbitMQ; this module is what the command line (`meter-bridge accounts …`, `devices add|retire|replace`)
calls. Device accounts go through `device_accounts(cfg)`, which picks the broker by `broker.kind`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from cloud_bridge.accounts.dynsec import DynSecAdmin, DynSecError, new_password
from cloud_bridge.accounts.roles import (
    ADMIN_ROLE,
    DEVICE_ROLE_PREFIX,
    ROLE_ACLS,
    ROLES,
    AccountError,
    Role,
    check_account_name,
    client_id_for,
    device_acls,
)
from contract import topics
from contract.settings import read_secret

if TYPE_CHECKING:
    from cloud_bridge.accounts.rabbitmq import RabbitMqAdmin
    from cloud_bridge.config import BridgeConfig

__all__ = [
    "ROLES",
    "Account",
    "AccountError",
    "DeviceAccounts",
    "DynSecAdmin",
    "DynSecError",
    "Role",
    "add_account",
    "add_device_account",
    "admin_for",
    "device_accounts",
    "list_accounts",
    "rabbitmq_admin_for",
    "remove_account",
    "retire_device_on_broker",
    "role_admin_for",
    "rotate_password",
]


@dataclass(frozen=True)
class Account:
    username: str
    role: str
    client_id: str | None


def _admin_password(cfg: BridgeConfig) -> str:
    if cfg.broker.admin_password_file is None:
        raise AccountError("broker.admin_password_file is not set: accounts are managed on the broker through its "
                           "admin account; set it to the file `meter-bridge broker init` wrote (docs/operate-fleet.md)")
    try:
        password = read_secret(str(cfg.broker.admin_password_file))
    except (OSError, ValueError) as exc:
        raise AccountError(f"cannot read broker.admin_password_file {cfg.broker.admin_password_file}: {exc}") from None
    assert password is not None
    return password


def admin_for(cfg: BridgeConfig) -> DynSecAdmin:
    """The admin connection the bridge config names (broker.admin_*, reached at mqtt.host/port)."""
    if cfg.broker.kind != "mosquitto":
        raise AccountError(f"this is Mosquitto's account management; the broker is {cfg.broker.kind} (broker.kind), "
                           "whose accounts `meter-bridge accounts`/`devices` manage through its management API "
                           "(docs/operate-city-scale.md)")
    return DynSecAdmin(cfg.mqtt.host, cfg.mqtt.port, cfg.broker.admin_username, _admin_password(cfg),
                       ca_file=cfg.mqtt.ca_file)


class DeviceAccounts(Protocol):
    """Device accounts on whichever broker the config names (a context manager holding its connection)."""

    warnings: list[str]  # what the last retire_device could not do (say it to the operator)

    def __enter__(self) -> DeviceAccounts: ...

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None: ...

    def add_device(self, device_id: str, *, reissue: bool = False) -> str:
        """Create the device's account (or, with `reissue`, give it a new password); the password."""

    def retire_device(self, device_id: str) -> list[str]:
        """Revoke the account (disconnecting the device); the retained topics cleared (`warnings`: where not)."""


class MosquittoDeviceAccounts:
    def __init__(self, admin: DynSecAdmin) -> None:
        self.admin = admin
        self.warnings: list[str] = []

    def __enter__(self) -> MosquittoDeviceAccounts:
        self.admin.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.admin.close()

    def add_device(self, device_id: str, *, reissue: bool = False) -> str:
        return add_device_account(self.admin, device_id, reissue=reissue)

    def retire_device(self, device_id: str) -> list[str]:
        return retire_device_on_broker(self.admin, device_id)


def rabbitmq_admin_for(cfg: BridgeConfig) -> RabbitMqAdmin:
    """The management API connection the bridge config names (broker.management_url, broker.admin_*)."""
    from cloud_bridge.accounts.rabbitmq import RabbitMqAdmin

    return RabbitMqAdmin(cfg.broker.management_url, cfg.broker.admin_username, _admin_password(cfg),
                         vhost=cfg.broker.vhost, ca_file=cfg.broker.management_ca_file,
                         mqtt_nodes=cfg.broker.mqtt_nodes, mqtt_ca_file=cfg.mqtt.ca_file)


def device_accounts(cfg: BridgeConfig) -> DeviceAccounts:
    """Device accounts on the broker `broker.kind` names: Mosquitto's dynamic security, or RabbitMQ's
    users and topic permissions (management API)."""
    if cfg.broker.kind == "rabbitmq":
        return rabbitmq_admin_for(cfg)
    return MosquittoDeviceAccounts(admin_for(cfg))


def _role_of(client: dict[str, Any]) -> str:
    roles = [str(r.get("rolename", "")) for r in client.get("roles") or [] if isinstance(r, dict)]
    for r in roles:
        if r.startswith(DEVICE_ROLE_PREFIX):
            return "device"
    return roles[0] if roles else "-"


def role_admin_for(cfg: BridgeConfig) -> DynSecAdmin | RabbitMqAdmin:
    """The admin connection for people's and services' accounts (`meter-bridge accounts …`) on the broker
    `broker.kind` names: Mosquitto's dynamic security, or RabbitMQ's management API."""
    return rabbitmq_admin_for(cfg) if cfg.broker.kind == "rabbitmq" else admin_for(cfg)


def add_account(admin: DynSecAdmin | RabbitMqAdmin, name: str, role: Role) -> str:
    """Create NAME with ROLE's rights; returns its one-time password. Refuses an existing name."""
    if not isinstance(admin, DynSecAdmin):  # RabbitMQ: its management API
        return admin.add_role_account(name, role)
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    check_account_name(name, role=role)
    if admin.get_client(name) is not None:
        raise AccountError(f"account {name!r} exists already: `meter-bridge accounts rotate {name}` issues a new "
                           "password, `accounts remove` deletes it")
    admin.ensure_role(role, ROLE_ACLS[role])
    password = new_password()
    admin.create_client(name, password, rolename=role, clientid=client_id_for(name, role),
                        textname=f"meter-bridge {role}")
    return password


def add_device_account(admin: DynSecAdmin, device_id: str, *, reissue: bool = False) -> str:
    """A device's account: user name and client id are its id, rights only on its own topics."""
    role = DEVICE_ROLE_PREFIX + device_id
    admin.ensure_role(role, device_acls(device_id))
    password = new_password()
    existing = admin.get_client(device_id)
    if existing is not None:
        if not reissue:
            raise AccountError(f"the broker has an account {device_id!r} already (`meter-bridge accounts list`): "
                               "choose another device id, or `meter-bridge accounts remove` it if it is a leftover")
        admin.set_password(device_id, password)
        return password
    admin.create_client(device_id, password, rolename=role, clientid=device_id, textname="meter-bridge device")
    return password


def rotate_password(admin: DynSecAdmin | RabbitMqAdmin, name: str) -> str:
    if not isinstance(admin, DynSecAdmin):  # RabbitMQ: its management API
        return admin.rotate(name)
    if admin.get_client(name) is None:
        raise AccountError(f"no broker account {name!r} (`meter-bridge accounts list` shows them)")
    password = new_password()
    admin.set_password(name, password)
    return password


def remove_account(admin: DynSecAdmin | RabbitMqAdmin, name: str) -> bool:
    """Delete the account (the broker disconnects it at once) and a device's own role (on RabbitMQ: its
    connections and MQTT session queues)."""
    if not isinstance(admin, DynSecAdmin):  # RabbitMQ: its management API
        return admin.remove(name)
    gone = admin.delete_client(name)
    if gone:
        admin.delete_role(DEVICE_ROLE_PREFIX + name)
    return gone


def retire_device_on_broker(admin: DynSecAdmin, device_id: str) -> list[str]:
    """Revoke the device's account (the broker disconnects it at once) and clear its retained topics:
    status, telemetry, state and every Home Assistant discovery config under its node id, so HA removes
    its entities. Returns the topics cleared."""
    admin.ensure_role(ADMIN_ROLE, ROLE_ACLS[ADMIN_ROLE])  # a broker set up by an older version gains new rights
    remove_account(admin, device_id)
    time.sleep(0.3)  # the kicked device's last will (`offline`, retained) lands before we clear it
    found = admin.retained(f"{topics.HA_DISCOVERY_PREFIX}/+/{device_id}/+/config")
    cleared = [*topics.device_retained(device_id), *sorted(found)]
    admin.clear_retained(cleared)
    return cleared


def list_accounts(admin: DynSecAdmin | RabbitMqAdmin) -> list[Account]:
    """Every broker account with its role and the client id it must use (Mosquitto's dynamic security, or
    RabbitMQ's users with the role read back from their topic permissions)."""
    if not isinstance(admin, DynSecAdmin):  # RabbitMQ: its management API
        return [Account(name, role, client_id) for name, role, client_id in admin.list_accounts()]
    out = [Account(str(c.get("username")), _role_of(c), c.get("clientid") or None) for c in admin.list_clients()]
    return sorted(out, key=lambda a: (a.role, a.username))
