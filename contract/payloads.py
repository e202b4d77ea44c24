"""Pydantic models of every payload in the MQTT contract, version 1.

Serialisation is canonical (fixed field order, compact separators, UTC times with a `Z`), so a Reading
that is parsed and dumped again gives the same bytes: the outbox can republish a reading byte for byte.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from contract.times import check_sane, format_utc, parse_utc, to_utc
from contract.topics import DEVICE_ID_PATTERN

CONTRACT_VERSION = 1
MAX_PAYLOAD_BYTES = 16 * 1024

VALUE_PATTERN = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
_VALUE_RE = re.compile(VALUE_PATTERN)


MAX_SEQ = 2**63 - 1  # a signed 64-bit integer: what both databases store


def _wire_time(value: object) -> datetime:
    """A time on the wire is an ISO 8601 string with a zone; in Python, an aware datetime. Never a number
    (an integer `taken_at` is seconds or milliseconds? nobody knows), never a naive time."""
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, str):
        return parse_utc(value)
    raise ValueError(f"time must be an ISO 8601 string like 2026-11-24T17:00:00Z, not {type(value).__name__}")


UtcTime = Annotated[datetime, BeforeValidator(_wire_time),
                    PlainSerializer(format_utc, return_type=str, when_used="json")]
# A time a device reports: also inside the sane window (2000 … a day ahead of this machine's clock).
DeviceTime = Annotated[datetime, BeforeValidator(_wire_time), AfterValidator(check_sane),
                       PlainSerializer(format_utc, return_type=str, when_used="json")]


class _Strict(BaseModel):
    """Unknown keys are refused: a typo in a producer fails loudly instead of vanishing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


class _Wire(_Strict):
    """What arrives from another machine: strict types, so `true` is not a seq, `"202"` not a number and
    `203.0` not an integer (pydantic's lax mode would take all three)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Digit(_Wire):
    """One wheel as the model saw it: `v` digit reached (0-9) or "N", `f` position, `p` confidence."""

    v: int | Literal["N"]
    f: float | None = Field(default=None, ge=0.0, lt=10.0)
    p: float = Field(ge=0.0, le=1.0)

    @field_validator("v")
    @classmethod
    def _digit_range(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 0 <= v <= 9:
            raise ValueError("digit must be 0-9 or 'N'")
        return v


Status = Literal["ok", "suspect", "error"]


def _omit_none(value: object) -> bool:
    return value is None


def _omit_zero(value: object) -> bool:
    return value == 0


class Reading(_Wire):
    """One meter reading as the device publishes it on `meters/{device_id}/reading`.

    `epoch` names the device's outbox: a new SD card (or a deleted corrupt outbox) starts seq at 1 again
    under a new epoch, so `(device_id, epoch, seq)` is unique for ever. It is optional (v1 devices send
    none; the bridge files those under epoch 0) and left out of the JSON when absent, so a v1 reading
    still round-trips byte for byte.
    """

    v: Literal[1] = 1
    device_id: str = Field(pattern=f"^{DEVICE_ID_PATTERN}$")
    epoch: int | None = Field(default=None, ge=1, le=MAX_SEQ, exclude_if=_omit_none)
    seq: int = Field(ge=0, le=MAX_SEQ)
    taken_at: DeviceTime
    value: str | None = Field(default=None, pattern=VALUE_PATTERN)
    unit: Literal["m3"] = "m3"
    status: Status
    reason: str | None = Field(default=None, max_length=500)
    confidence: float = Field(ge=0.0, le=1.0)
    digits: list[Digit] = Field(default_factory=list, max_length=32)
    model: str = Field(default="", max_length=128)

    @model_validator(mode="after")
    def _consistent(self) -> Reading:
        if self.status == "ok" and (self.value is None or self.reason is not None):
            raise ValueError("an ok reading has a value and no reason")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"a {self.status} reading needs a reason")
        return self

    def decimal_value(self) -> Decimal | None:
        return None if self.value is None else Decimal(self.value)


AckState = Literal["stored", "duplicate", "rejected"]


class Ack(_Wire):
    """The bridge's answer on `meters/{device_id}/ack`. `epoch` echoes the reading's (absent for v1)."""

    seq: int | None = None
    epoch: int | None = Field(default=None, exclude_if=_omit_none)
    state: AckState
    reason: str | None = None


DeviceStatus = Literal["online", "offline"]


class Telemetry(_Strict):
    """Retained device health on `meters/{device_id}/telemetry`."""

    uptime_s: float = Field(ge=0)
    outbox_depth: int = Field(ge=0)
    outbox_dropped: int = Field(default=0, ge=0)
    outbox_rejected: int = Field(default=0, ge=0, description="readings the bridge answered `rejected`")
    last_error: str | None = None
    cpu_temp_c: float | None = None
    free_disk_bytes: int | None = None
    disk_full: bool = False
    model: str = ""
    version: str = ""
    last_seq: int | None = None
    commands_refused: int = Field(default=0, ge=0)
    reanchors: int = Field(default=0, ge=0, description="times the device re-anchored its accepted value by itself")
    stall_reconnects: int = Field(
        default=0, ge=0, exclude_if=_omit_zero,
        description="times the device reconnected because no ack came through mqtt.stall_rounds rounds of resends "
                    "(since the agent started); left out while 0, so a bridge without the field still takes it")
    at: UtcTime


COMMAND_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"


class SetValueCommand(_Wire):
    """`meters/{id}/cmd/set-value`: the installer confirms the meter's current value."""

    value: str = Field(pattern=VALUE_PATTERN)
    at: DeviceTime | None = None
    id: str | None = Field(None, pattern=COMMAND_ID_PATTERN, description="echoed in the device's answer")


class CommandResult(_Strict):
    """`meters/{id}/cmd/{name}/result` (QoS 1, not retained): the device's answer to one command.
    `accepted`: it will act on it (capture: a reading follows); `done`: it did; `refused`: `reason` says why."""

    v: Literal[1] = 1
    id: str | None = Field(None, pattern=COMMAND_ID_PATTERN, description="the command's `id`, when it had one")
    name: Literal["capture", "reload", "set-value"]
    state: Literal["accepted", "done", "refused"]
    reason: str | None = Field(None, max_length=1000)
    at: UtcTime


class MeterState(_Strict):
    """Retained on `meters/{device_id}/state` for Home Assistant: the device's latest word about its meter.

    `value` is the latest accepted (ok) value and never goes below what the device said before; the rest
    describes the newest reading in `seq` order (`status`, `reason`, `taken_at`, `read_value`). Separate
    from the reading stream: a republished old reading never touches it.
    """

    v: Literal[1] = 1
    device_id: str = Field(pattern=f"^{DEVICE_ID_PATTERN}$")
    seq: int = Field(ge=0, le=2**63 - 1, description="the newest reading taken into account (0: none yet)")
    value: str | None = Field(default=None, pattern=VALUE_PATTERN, description="latest accepted value")
    unit: Literal["m3"] = "m3"
    value_seq: int | None = Field(default=None, ge=0, description="the reading that gave `value` (None: set-value)")
    value_at: UtcTime | None = Field(default=None, description="when `value` was read (or set by an installer)")
    taken_at: UtcTime | None = Field(default=None, description="when the newest reading was taken")
    status: Status | None = None
    reason: str | None = Field(default=None, max_length=500)
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    read_value: str | None = Field(default=None, pattern=VALUE_PATTERN, description="what the newest reading read")
    flow_m3_per_h: float | None = Field(default=None, ge=0.0, description="over the last accepted readings")

    def decimal_value(self) -> Decimal | None:
        return None if self.value is None else Decimal(self.value)


class LastReading(_Strict):
    seq: int
    taken_at: UtcTime
    stored_at: UtcTime
    value: str | None
    status: Status
    reason: str | None = None


class BindingView(_Strict):
    """A binding as operators may see it: the payer code masked."""

    meter_serial: str
    kind: Literal["cold", "hot"]
    payer_masked: str
    since: UtcTime


class SubmissionView(_Strict):
    period: str
    state: str
    value: str | None = None
    reason: str | None = None


class LoyaltyView(_Strict):
    period: str
    points: int
    state: str


class DeviceState(_Strict):
    """Retained on `bridge/devices/{device_id}/state` for any MQTT dashboard."""

    device_id: str
    online: bool | None = None
    last_reading: LastReading | None = None
    age_s: float | None = None
    stale: bool = False
    binding: BindingView | None = None
    submission: SubmissionView | None = None
    loyalty: LoyaltyView | None = None
    at: UtcTime


class FleetCounts(_Strict):
    """Retained on `bridge/fleet`."""

    devices: int
    online: int
    offline: int
    stale: int
    suspect_last_day: int  # devices with a `suspect` reading taken in the last 24 h (not `error` ones)
    submitted_this_period: int = 0  # meters (payer, meter) accepted by billing; a correction is not a second one
    needs_attention: int = 0  # meters with a submission waiting for a person
    errors_last_day: int = 0  # devices with an `error` reading (nothing could be read) in the last 24 h
    corrections_this_period: int = 0  # residents' corrections accepted by billing after the first submission
    period: str | None = None
    at: UtcTime


class DeadLetter(_Strict):
    """What the bridge refused and why, on `bridge/deadletter`. Never carries a payer code."""

    topic: str
    reason: str
    detail: str | None = None
    device_id: str | None = None
    seq: int | None = None
    size: int
    at: UtcTime


def mask_payer(code: str) -> str:
    """`0123456789` -> `******6789`."""
    return "*" * max(0, len(code) - 4) + code[-4:]


def dump(model: BaseModel) -> bytes:
    return model.model_dump_json().encode("utf-8")


def json_ready(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def is_decimal_string(value: str) -> bool:
    return bool(_VALUE_RE.match(value))
