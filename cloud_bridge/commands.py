"""Commands to a device (`capture`, `reload`, `set-value`): checked, sent, answered, audit-logged.

Every command gets a row in `command_log` before it is sent (who, when, what), updated with the
device's answer on `meters/{id}/cmd/{name}/result` (`accepted`, `done`, `refused` + reason) or
`no_answer`. A command refused here, before it reaches the device, is logged as `blocked`.
"""

from __future__ import annotations

import json
import re
import ssl
import threading
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import Engine, select

from cloud_bridge.config import BridgeConfig
from cloud_bridge.corrections import check_correction, meter_of_device
from cloud_bridge.store.tables import command_log, devices, utcnow
from contract import topics
from contract.payloads import VALUE_PATTERN, CommandResult, SetValueCommand, format_utc
from contract.settings import read_secret

EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_VALUE_RE = re.compile(VALUE_PATTERN)


class CommandError(ValueError):
    """The command cannot be sent; the message says why and what to do."""


@dataclass(frozen=True)
class CommandOutcome:
    command_id: str
    device_id: str
    name: str
    args: dict[str, Any]
    requested_by: str
    requested_at: datetime
    state: str  # accepted | done | refused | no_answer | blocked
    reason: str | None
    answered_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["requested_at"] = format_utc(self.requested_at)
        d["answered_at"] = format_utc(self.answered_at) if self.answered_at else None
        return d


def _check_device(conn: Any, device_id: str) -> None:
    row = conn.execute(select(devices.c.retired_at).where(devices.c.device_id == device_id)).first()
    if row is None:
        raise CommandError(f"unknown device {device_id} (`meter-bridge devices list` shows them)")
    if row.retired_at is not None:
        raise CommandError(f"device {device_id} is retired; it has no broker account any more")


def check_set_value(conn: Any, cfg: BridgeConfig, device_id: str, value: str, at: datetime | None, now: datetime,
                    *, confirm: bool = False) -> str | None:
    """Why a set-value must not be sent, or None. The value is what the installer reads on the meter: a
    decimal string, at a sane time, and what the settlement checks allow for the device's meter at that
    time (`cloud_bridge.corrections.check_correction`: not below the readings before it, not above those
    after, no faster rise than the meter can do, not below what billing holds). With nothing around to
    check against, it is sent only with `confirm`."""
    if not _VALUE_RE.match(value):
        return f"value {value!r} is not a decimal string like 00123.456"
    if at is not None and not (EARLIEST <= at <= now + timedelta(days=1)):
        return f"--at {format_utc(at)} is outside 2000-01-01 .. one day from now"
    meter = meter_of_device(conn, device_id)
    if meter is None:
        return None  # not bound: no meter history to check against, nothing it could bill
    verdict = check_correction(conn, meter, value, at or now, cfg)
    if verdict.state == "refused":
        return verdict.reason
    if verdict.state == "review" and not confirm:
        return f"{verdict.reason}: send it again with --confirm once you have checked the meter"
    return None


def _log(engine: Engine, o: CommandOutcome) -> None:
    with engine.begin() as conn:
        conn.execute(command_log.insert().values(
            command_id=o.command_id, device_id=o.device_id, name=o.name, args=json.dumps(o.args),
            requested_by=o.requested_by, requested_at=o.requested_at, state=o.state, reason=o.reason,
            answered_at=o.answered_at))


def _record_answer(engine: Engine, command_id: str, state: str, reason: str | None, at: datetime | None) -> None:
    with engine.begin() as conn:
        conn.execute(command_log.update().where(command_log.c.command_id == command_id)
                     .values(state=state, reason=reason, answered_at=at))


def _payload(name: str, command_id: str, value: str | None, at: datetime | None) -> bytes:
    if name == "set-value":
        assert value is not None
        return SetValueCommand(value=value, at=at, id=command_id).to_json_bytes()
    return json.dumps({"id": command_id}).encode()


def send_command(engine: Engine, cfg: BridgeConfig, device_id: str, name: str, *, requested_by: str,
                 value: str | None = None, at: datetime | None = None, confirm: bool = False,
                 timeout_s: float | None = None) -> CommandOutcome:
    """Check, log, send, wait for the answer, log it. Raises CommandError when nothing could be sent
    (unknown or retired device, no broker account configured, broker unreachable)."""
    if name not in topics.COMMANDS:
        raise CommandError(f"unknown command {name!r}: one of {', '.join(topics.COMMANDS)}")
    if (name == "set-value") != (value is not None):
        raise CommandError("set-value needs a VALUE" if name == "set-value" else f"{name} takes no VALUE")
    if at is not None and name != "set-value":
        raise CommandError("--at goes with set-value only")
    now = utcnow()
    command_id = uuid.uuid4().hex
    args: dict[str, Any] = {} if value is None else {"value": value, **({"at": format_utc(at)} if at else {}),
                                                     **({"confirmed": True} if confirm else {})}
    with engine.connect() as conn:
        _check_device(conn, device_id)
        blocked = check_set_value(conn, cfg, device_id, value, at, now, confirm=confirm) if value is not None \
            else None
    if blocked:
        outcome = CommandOutcome(command_id, device_id, name, args, requested_by, now, "blocked", blocked, None)
        _log(engine, outcome)
        return outcome
    c = cfg.commands
    if not c.username or not c.password_file:
        raise CommandError("commands.username and commands.password_file are not set: make an operator account "
                           "(`meter-bridge accounts add NAME --role operator --password-out FILE`) and name it there")
    password = read_secret(c.password_file)
    _log(engine, CommandOutcome(command_id, device_id, name, args, requested_by, now, "sent", None, None))
    try:
        answer = _exchange(cfg, c.username, password or "", device_id, name, _payload(name, command_id, value, at),
                           command_id, timeout_s or c.timeout_s)
    except CommandError as exc:
        _record_answer(engine, command_id, "failed", str(exc), None)
        raise
    state: str
    reason: str | None
    answered: datetime | None
    if answer is None:
        # On RabbitMQ a device's session lasts one connection (edge mqtt.session auto with MQTT 3.1.1): a
        # command it missed is not kept for it (docs/operate-city-scale.md, "A broker node dies").
        later = ("devices keep no session: send it again once it is online" if cfg.broker.kind == "rabbitmq"
                 else "a device that reconnects may still act on it")
        state, reason, answered = "no_answer", f"no answer within {timeout_s or c.timeout_s:.0f}s: is the device " \
            f"online (`devices list`)? On this broker {later}", None
    else:
        state, reason, answered = answer.state, answer.reason, utcnow()
    _record_answer(engine, command_id, state, reason, answered)
    return CommandOutcome(command_id, device_id, name, args, requested_by, now, state, reason, answered)


def _exchange(cfg: BridgeConfig, username: str, password: str, device_id: str, name: str, payload: bytes,
              command_id: str, timeout_s: float) -> CommandResult | None:
    """Subscribe to the answer topic, publish the command (QoS 1), wait for the answer with our id.

    MQTT 5 on Mosquitto; MQTT 3.1.1 on RabbitMQ (broker.kind = rabbitmq: 3.10's MQTT plugin has no MQTT 5),
    whose MQTT plugin routes the topic to amq.topic like a device's, so the device sees no difference.
    There a refused publish is not a PUBACK code: the broker closes the connection."""
    subscribed, answered, closed, failed = threading.Event(), threading.Event(), threading.Event(), []
    got: list[CommandResult] = []
    pubacks: dict[int, int] = {}

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        if rc.is_failure:
            failed.append(f"the broker refused {username!r}: {rc} (check commands.username/password_file; the "
                          "client id must be the account's name, so one `cmd` at a time per account)")
            subscribed.set()
            return
        client.subscribe(topics.cmd_result(device_id, name), qos=1)

    def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, codes: list[Any], _p: Any = None) -> None:
        if any(code.is_failure for code in codes):
            failed.append(f"account {username!r} may not read device answers: give it the operator role")
        subscribed.set()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            result = CommandResult.model_validate_json(msg.payload)
        except ValueError:
            return
        if result.id == command_id:
            got.append(result)
            answered.set()

    protocol = mqtt.MQTTv311 if cfg.broker.kind == "rabbitmq" else mqtt.MQTTv5
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username, protocol=protocol)
    client.username_pw_set(username, password)
    if cfg.mqtt.ca_file:
        client.tls_set(ca_certs=cfg.mqtt.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.on_publish = lambda _c, _u, mid, rc, _p: pubacks.__setitem__(mid, int(rc.value))
    client.on_disconnect = lambda *_a: closed.set()
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=30)
    except OSError as exc:
        where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
        raise CommandError(f"cannot reach the broker at {where}: {exc.strerror or exc}") from None
    client.loop_start()
    try:
        if not subscribed.wait(10) or failed:
            raise CommandError(failed[0] if failed else "no answer from the broker within 10s")
        info = client.publish(topics.cmd(device_id, name), payload, qos=1)
        info.wait_for_publish(10)
        if info.rc != mqtt.MQTT_ERR_SUCCESS or pubacks.get(info.mid, 0) >= 0x80:
            why = pubacks.get(info.mid) or mqtt.error_string(info.rc)
            raise CommandError(f"the broker refused the command ({why}): account {username!r} needs the operator role")
        if not info.is_published():
            why = "closed the connection" if closed.is_set() else "did not confirm it within 10s"
            raise CommandError(f"the broker {why} at the command: account {username!r} needs the operator role "
                               "(on RabbitMQ a publish outside an account's topics closes its connection)")
        answered.wait(timeout_s)
        return got[0] if got else None
    finally:
        client.disconnect()
        client.loop_stop()


def command_history(engine: Engine, device_id: str | None = None, limit: int = 50) -> list[CommandOutcome]:
    q = select(command_log).order_by(command_log.c.requested_at.desc(), command_log.c.id.desc()).limit(limit)
    if device_id is not None:
        q = q.where(command_log.c.device_id == device_id)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    return [CommandOutcome(r.command_id, r.device_id, r.name, json.loads(r.args or "{}"), r.requested_by,
                           r.requested_at, r.state, r.reason, r.answered_at) for r in rows]
