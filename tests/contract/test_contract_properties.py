"""Properties of the wire contract (hypothesis): readings round-trip byte for byte, and parse_reading
never raises: anything that is not a valid reading becomes a Refusal with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contract.parse import Refusal, parse_reading
from contract.payloads import MAX_PAYLOAD_BYTES, VALUE_PATTERN, Digit, Reading, SetValueCommand
from contract.times import check_sane, format_utc, parse_utc
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
# The contract's sane window: 2000-01-01 up to a day ahead of the receiver's clock.
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 1, 1), timezones=st.just(UTC))


@st.composite
def readings(draw: st.DrawFn) -> Reading:
    status = draw(st.sampled_from(["ok", "suspect", "error"]))
    value = draw(values) if status == "ok" else draw(st.none() | values)
    reason = None if status == "ok" else draw(st.text(min_size=1, max_size=500))
    return Reading(device_id=draw(device_ids), epoch=draw(st.none() | st.integers(1, 2**63 - 1)),
                   seq=draw(st.integers(0, 2**63 - 1)), taken_at=draw(times),
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
        "bad_time": (_with(taken_at="0001-01-01T00:00:00+14:00"), "meters/dev-1/reading"),
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


# -- hardening (issue 20): strict types, sane times, duplicate keys, nothing raises ----------------------


@pytest.mark.parametrize(("field", "value"), [
    ("seq", True),          # bool is an int subclass: lax pydantic stored it as seq 1
    ("seq", "202"),         # a string of digits
    ("seq", 203.0),         # a float with an integral value
    ("taken_at", 1764003600),  # seconds? milliseconds? refused, never guessed
    ("taken_at", "2026-11-24T17:00:00"),  # no zone: refused, never guessed
    ("confidence", "0.9"),
    ("confidence", True),
    ("epoch", True),
    ("epoch", 0),
])
def test_lax_types_are_refused(field: str, value: object) -> None:
    result = parse_reading(_with(**{field: value}), "meters/dev-1/reading")
    assert isinstance(result, Refusal), (field, value, result)
    assert field in result.detail


def test_a_key_given_twice_is_refused() -> None:
    raw = _with().replace(b'"seq":3', b'"seq":3,"seq":4').replace(b'"seq": 3', b'"seq": 3, "seq": 4')
    assert raw.count(b'"seq"') == 2
    result = parse_reading(raw, "meters/dev-1/reading")
    assert isinstance(result, Refusal) and result.reason == "bad_json" and "twice" in result.detail


@pytest.mark.parametrize("taken_at", [
    "0001-01-01T00:00:00+14:00",  # its UTC form is before year 1: OverflowError inside astimezone
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T00:00:00Z",        # would sort after every real reading for ever
    "1970-01-01T00:00:00Z",        # a Pi that lost its clock
    "1999-12-31T23:59:59Z",
    "not a time",
])
def test_times_outside_the_sane_window_are_refused(taken_at: str) -> None:
    result = parse_reading(_with(taken_at=taken_at), "meters/dev-1/reading")
    assert isinstance(result, Refusal) and result.reason == "bad_time", result
    assert result.seq == 3  # the bridge can still answer the device


def test_a_day_ahead_is_the_limit() -> None:
    now = datetime.now(UTC)
    assert isinstance(parse_reading(_with(taken_at=format_utc(now + timedelta(hours=23))), None), Reading)
    late = parse_reading(_with(taken_at=format_utc(now + timedelta(hours=25))), None)
    assert isinstance(late, Refusal) and "ahead" in late.detail


def test_a_seq_beyond_64_bits_is_refused_and_not_carried_on_the_refusal() -> None:
    result = parse_reading(_with(seq=2**63), "meters/dev-1/reading")
    assert isinstance(result, Refusal) and result.reason == "bad_field"
    assert result.seq is None  # a refusal row must fit a BIGINT too


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=st.timezones() | st.just(UTC) | st.none()), st.integers(-14 * 60, 14 * 60))
def test_any_iso_time_never_raises(when: datetime, offset_min: int) -> None:
    naive = when.replace(tzinfo=None).isoformat()
    sign = "+" if offset_min >= 0 else "-"
    for text in (when.isoformat(), naive, f"{naive}{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"):
        result = parse_reading(_with(taken_at=text), "meters/dev-1/reading")
        assert isinstance(result, Refusal | Reading)
        if isinstance(result, Reading):
            assert datetime(2000, 1, 1, tzinfo=UTC) <= result.taken_at <= datetime.now(UTC) + timedelta(days=1)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.booleans(), st.floats(), st.text(max_size=12), st.integers(min_value=2**63),
                 st.integers(max_value=-1)))
def test_a_seq_that_is_not_a_64_bit_count_is_refused(seq: object) -> None:
    assert isinstance(parse_reading(_with(seq=seq), "meters/dev-1/reading"), Refusal)


def test_the_epoch_is_optional_and_a_v1_reading_round_trips() -> None:
    v1 = _with()
    parsed = parse_reading(v1, None)
    assert isinstance(parsed, Reading) and parsed.epoch is None
    assert b"epoch" not in parsed.to_json_bytes()
    with_epoch = parsed.model_copy(update={"epoch": 7}).to_json_bytes()
    assert b'"epoch":7' in with_epoch
    again = parse_reading(with_epoch, None)
    assert isinstance(again, Reading) and again.epoch == 7 and again.to_json_bytes() == with_epoch


def test_one_utc_parser_and_one_policy() -> None:
    assert parse_utc("2026-11-24T17:00:00Z") == datetime(2026, 11, 24, 17, tzinfo=UTC)
    assert parse_utc("2026-11-24T20:00:00+03:00") == datetime(2026, 11, 24, 17, tzinfo=UTC)
    for bad in ("2026-11-24T17:00:00", "0001-01-01T00:00:00+14:00", "yesterday", ""):
        with pytest.raises(ValueError):
            parse_utc(bad)
    with pytest.raises(ValueError, match="time zone"):
        check_sane(datetime(2026, 1, 1))  # naive


def test_set_value_command_is_strict_and_sane() -> None:
    assert SetValueCommand.model_validate_json(b'{"value":"00012.5","at":"2026-11-24T17:00:00Z"}').at
    for bad in (b'{"value":"00012.5","at":"0001-01-01T00:00:00+14:00"}', b'{"value":12.5}',
                b'{"value":"00012.5","at":1764003600}'):
        with pytest.raises(ValueError):
            SetValueCommand.model_validate_json(bad)
