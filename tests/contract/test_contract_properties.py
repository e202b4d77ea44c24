"""Properties of the wire contract (hypothesis): readings round-trip byte for byte, and parse_reading
never raises: anything that is not a valid reading becomes a Refusal with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from contract.parse import Refusal, parse_reading
from contract.payloads import MAX_PAYLOAD_BYTES, VALUE_PATTERN, Digit, Reading
from contract.topics import DEVICE_ID_PATTERN

device_ids = st.from_regex(f"^{DEVICE_ID_PATTERN}$", fullmatch=True).filter(lambda s: "\n" not in s)
values = st.from_regex(VALUE_PATTERN, fullmatch=True).filter(lambda s: "\n" not in s)
probabilities = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
digits = st.builds(
    Digit,
    v=st.integers(0, 9) | st.just("N"),
    f=st.none() | st.floats(min_value=0.0, max_value=9.99, allow_nan=False),
    p=probabilities,
)
# Years before 1000 are left out: strftime("%Y") does not zero-pad them on Linux (not a real timestamp).
times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    status = draw(st.sampled_from(["ok", "suspect", "error"]))
    value = draw(values) if status == "ok" else draw(st.none() | values)
    reason = None if status == "ok" else draw(st.text(min_size=1, max_size=500))
    return Reading(device_id=draw(device_ids), seq=draw(st.integers(0, 2**63 - 1)), taken_at=draw(times),
                   value=value, status=status, reason=reason, confidence=draw(probabilities),
                   digits=draw(st.lists(digits, max_size=32)), model=draw(st.text(max_size=128)))


@settings(max_examples=300, deadline=None)
@given(readings())
def test_any_valid_reading_round_trips_byte_exact(r: Reading) -> None:
    raw = r.to_json_bytes()
    assert len(raw) <= MAX_PAYLOAD_BYTES
    parsed = parse_reading(raw, f"meters/{r.device_id}/reading")
    assert isinstance(parsed, Reading), parsed
    assert parsed == r
    assert parsed.to_json_bytes() == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    result = parse_reading(payload, "meters/dev-1/reading")
    assert isinstance(result, Refusal | Reading)
    if isinstance(result, Refusal):
        assert result.reason and result.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values, st.text(max_size=80))
def test_arbitrary_json_and_topics_never_raise(doc: object, topic: str) -> None:
    payload = json.dumps(doc).encode("utf-8", "surrogatepass")
    for t in (None, topic, "meters/dev-1/reading"):
        result = parse_reading(payload, t)
        assert isinstance(result, Refusal | Reading)


@settings(max_examples=200, deadline=None)
@given(readings(), st.sampled_from(["v", "device_id", "seq", "taken_at", "status", "confidence"]))
def test_a_missing_field_is_named(r: Reading, field: str) -> None:
    doc = json.loads(r.to_json_bytes())
    del doc[field]
    result = parse_reading(json.dumps(doc).encode())
    assert isinstance(result, Refusal) and result.reason == "missing_field"
    assert field in result.detail


VALID = json.loads(Reading(device_id="dev-1", seq=3, taken_at=datetime(2026, 11, 24, tzinfo=UTC), value="00012.5",
                           status="ok", confidence=0.9).to_json_bytes())


def _with(**changes: object) -> bytes:
    return json.dumps({**VALID, **changes}).encode()


def test_every_refusal_reason_is_reachable() -> None:
    cases = {
        "bad_json": (b'{"v": 1,', "meters/dev-1/reading"),
        "not_an_object": (b"[1, 2]", "meters/dev-1/reading"),
        "unknown_version": (_with(v=2), "meters/dev-1/reading"),
        "missing_field": (json.dumps({k: v for k, v in VALID.items() if k != "taken_at"}).encode(),
                          "meters/dev-1/reading"),
        "bad_value": (_with(value="12,5"), "meters/dev-1/reading"),
        "oversized": (_with(model="x" * MAX_PAYLOAD_BYTES), "meters/dev-1/reading"),
        "device_id_mismatch": (_with(device_id="dev-2"), "meters/dev-1/reading"),
        "bad_device_id": (_with(device_id="no spaces"), None),
        "bad_field": (_with(confidence=1.5), "meters/dev-1/reading"),
        "bad_topic": (_with(), "meters/dev-1/telemetry"),
    }
    for reason, (payload, topic) in cases.items():
        result = parse_reading(payload, topic)
        assert isinstance(result, Refusal), reason
        assert result.reason == reason, (reason, result)
    ok = parse_reading(_with(), "meters/dev-1/reading")
    assert isinstance(ok, Reading) and ok.value == "00012.5"


def test_seq_and_device_are_kept_on_refusals_so_the_bridge_can_answer() -> None:
    result = parse_reading(_with(value="abc"), "meters/dev-1/reading")
    assert isinstance(result, Refusal)
    assert (result.reason, result.device_id, result.seq) == ("bad_value", "dev-1", 3)
