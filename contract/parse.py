"""Turn raw MQTT bytes into a Reading or a Refusal with a reason. Never raises."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from contract import topics
from contract.payloads import CONTRACT_VERSION, MAX_PAYLOAD_BYTES, MAX_SEQ, Reading

RefusalReason = Literal[
    "oversized",
    "bad_json",
    "not_an_object",
    "unknown_version",
    "missing_field",
    "bad_value",
    "bad_device_id",
    "bad_field",
    "device_id_mismatch",
    "bad_topic",
    "bad_time",
]


class DuplicateKey(ValueError):
    """A JSON object names a key twice: which copy counts differs between parsers, so neither does."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise DuplicateKey(f"key {twice[:40]!r} is given twice")
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)


def loads_strict(payload: bytes | str) -> Any:
    """json.loads for UTF-8 text that refuses duplicate keys, NaN and Infinity (ValueError)."""
    text = payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload
    return _DECODER.decode(text)


def _seq_of(data: dict[str, Any]) -> int | None:
    """The seq to file a refusal under: only a real integer in the storable range."""
    seq = data.get("seq")
    return seq if type(seq) is int and 0 <= seq <= MAX_SEQ else None


@dataclass(frozen=True)
class Refusal:
    """Why a payload was not accepted; `detail` is safe to log (no payload echo beyond field names)."""

    reason: RefusalReason
    detail: str
    device_id: str | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(root)"


def parse_reading(payload: bytes, topic: str | None = None) -> Reading | Refusal:
    """Validate a reading payload (and, when given, that the topic names the same device). Never raises:
    one bad message must not stop a service that reads thousands."""
    try:
        return _parse_reading(payload, topic)
    except Exception as exc:  # a bug in validation must become a refusal, not a crash loop on redelivery
        return Refusal("bad_field", f"could not validate: {type(exc).__name__}: {str(exc)[:200]}")


def _parse_reading(payload: bytes, topic: str | None) -> Reading | Refusal:
    device_from_topic: str | None = None
    if topic is not None:
        parsed = topics.parse_device_topic(topic)
        if parsed is None or parsed.kind != topics.READING:
            return Refusal("bad_topic", f"not a reading topic: {topic[:200]!r}")
        device_from_topic = parsed.device_id
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Refusal(
            "oversized", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}", device_id=device_from_topic
        )
    try:
        data = loads_strict(payload)
    except (ValueError, RecursionError) as exc:
        return Refusal("bad_json", str(exc)[:200], device_id=device_from_topic)
    if not isinstance(data, dict):
        return Refusal("not_an_object", f"JSON {type(data).__name__}, expected an object",
                       device_id=device_from_topic)
    seq = _seq_of(data)
    if "v" not in data:
        return Refusal("missing_field", "v", device_id=device_from_topic, seq=seq)
    if data["v"] != CONTRACT_VERSION or isinstance(data["v"], bool):
        return Refusal("unknown_version", f"v={str(data['v'])[:20]!r}, this bridge reads v{CONTRACT_VERSION}",
                       device_id=device_from_topic, seq=seq)
    payload_id = data.get("device_id")
    if isinstance(payload_id, str) and not topics.is_valid_device_id(payload_id):
        return Refusal("bad_device_id", f"device_id does not match {topics.DEVICE_ID_PATTERN}",
                       device_id=device_from_topic, seq=seq)
    if device_from_topic is not None and isinstance(payload_id, str) and payload_id != device_from_topic:
        return Refusal("device_id_mismatch", f"topic says {device_from_topic}, payload says {payload_id}",
                       device_id=device_from_topic, seq=seq)
    try:
        return Reading.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _field_path(err["loc"])
        if err["type"] == "missing":
            reason: RefusalReason = "missing_field"
        elif where == "value":
            reason = "bad_value"
        elif where == "device_id":
            reason = "bad_device_id"
        elif where == "taken_at":
            reason = "bad_time"
        else:
            reason = "bad_field"
        return Refusal(reason, f"{where}: {err['msg']}"[:300], device_id=device_from_topic or (
            payload_id if isinstance(payload_id, str) and topics.is_valid_device_id(payload_id) else None),
            seq=seq)
