"""A resident's photo from upload to reading, in the store (no local files: any worker serves any step).

1. `save_draft`: the cleaned photo (upload.py) and what the reader proposed; a draft is no reading.
2. `save_reread`: the resident moved the counter box; the reader's new proposal replaces the old one.
3. `send`: the resident confirmed or edited the value. It is checked exactly like a person's correction
   (cloud_bridge/corrections.py: the meter's readings around now, what billing holds, the meter's
   wheels). Refused (e.g. a photo of another meter: a value far outside this meter's range): nothing is
   stored, the draft stays for another try. Otherwise it becomes a reading (`source` photo, no device,
   filed under the meter's binding in force for the payer), with the photo row as its evidence; an
   accepted one is settled at once (a person's checked value, like a correction) and, inside the
   submission window, a submission pass for that meter runs straight away, exactly the pass the timer
   runs; "review" (nothing around it to check against, e.g. the first photo of a new meter) waits for
   an operator (`meter-bridge correct ID --value V --by operator --confirm`).
Drafts never sent are deleted after `DRAFT_TTL` (`purge_drafts`, run on each upload).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, and_, delete, func, select, update

from cloud_bridge.registry import PhotoMeter, photo_binding
from cloud_bridge.settlement import settle_meter
from cloud_bridge.store.tables import photo_readings, readings
from contract.payloads import VALUE_PATTERN

if TYPE_CHECKING:
    import numpy as np

    from cloud_bridge.config import BridgeConfig
    from cloud_bridge.corrections import Verdict
    from cloud_bridge.delivery import Clock, Sleep
    from cloud_bridge.gateways.base import Gateways
    from cloud_bridge.photo.upload import Photo
    from cloud_bridge.submission.passes import MeterOutcome

log = logging.getLogger(__name__)

DRAFT_TTL = timedelta(days=1)
DEFAULT_WHEELS = (5, 3)  # a typical flat's meter: 5 black wheels, 3 red ones
COUNTER_SHARD = "web"


class PhotoError(ValueError):
    """A step that cannot be done; `code` is stable (the page's words, metrics), the message is English."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Draft:
    id: int
    user_id: int
    payer_code: str
    meter_serial: str
    created_at: datetime
    width: int
    height: int
    proposal: dict[str, Any]
    proposed_value: str | None
    reader_status: str
    box_moved: bool
    reading_id: int | None
    value: str | None
    edited: bool | None
    state: str | None
    reason: str | None

    @property
    def sent(self) -> bool:
        return self.reading_id is not None


def count(conn: Connection, names: Counter[str], now: datetime) -> None:
    """Add to the store's counters (metrics: `meterfleet_photos_*`), in the caller's transaction."""
    from cloud_bridge.ingest.store import bump_counters

    bump_counters(conn, COUNTER_SHARD, names, now)


def wheels_of(conn: Connection, meter: PhotoMeter) -> tuple[int, int]:
    """The wheels to read: as registered, else as the meter's newest value shows them, else 5 + 3."""
    if meter.digits is not None and meter.decimals is not None:
        return meter.digits, meter.decimals
    from cloud_bridge.store.tables import bindings

    last = conn.execute(select(readings.c.value).join(bindings, bindings.c.id == readings.c.binding_id)
                        .where(bindings.c.meter_serial == meter.meter_serial, readings.c.value.is_not(None))
                        .order_by(readings.c.taken_at.desc()).limit(1)).scalar()
    if last:
        whole, _, frac = str(last).partition(".")
        return meter.digits or len(whole), meter.decimals if meter.decimals is not None else len(frac)
    return meter.digits or DEFAULT_WHEELS[0], meter.decimals if meter.decimals is not None else DEFAULT_WHEELS[1]


def read(bgr: np.ndarray, digits: int, decimals: int,
         counter_box: tuple[int, int, int, int] | None = None) -> dict[str, Any]:
    """The reader's proposal for a photo (meter_vision.photo), as JSON-ready data."""
    try:
        from meter_vision.photo import read_photo
    except ImportError as exc:
        from cloud_bridge.photo import PHOTO_EXTRA_HINT

        raise PhotoError("reader_missing", f"the photo reader cannot be loaded ({exc}): {PHOTO_EXTRA_HINT}") from None
    try:
        result = read_photo(bgr, digits=digits, decimals=decimals, counter_box=counter_box)
    except Exception as exc:  # one photo the reader cannot take must not become a server error
        log.exception("the photo reader failed on a %dx%d photo", bgr.shape[1], bgr.shape[0])
        raise PhotoError("reader_failed", f"the photo reader failed: {str(exc)[:200]}") from None
    data = result.to_json()
    if not isinstance(data, dict):
        raise PhotoError("reader_failed", "the photo reader gave no answer")
    if data.get("status") not in ("ok", "unsure", "no_counter"):
        raise PhotoError("reader_failed", f"the photo reader answered status {data.get('status')!r}")
    return data


def save_draft(conn: Connection, *, user_id: int, payer_code: str, meter_serial: str, photo: Photo,
               proposal: dict[str, Any], now: datetime) -> int:
    status = str(proposal["status"])
    value = proposal.get("value")
    result = conn.execute(photo_readings.insert().values(
        user_id=user_id, payer_code=payer_code, meter_serial=meter_serial, created_at=now, image=photo.jpeg,
        image_bytes=len(photo.jpeg), width=photo.width, height=photo.height, sha256=photo.sha256,
        upload_format=photo.upload_format, upload_bytes=photo.upload_bytes,
        proposal=json.dumps(proposal, ensure_ascii=False), proposed_value=value if isinstance(value, str) else None,
        reader_status=status, box_moved=False))
    assert result.inserted_primary_key is not None
    count(conn, Counter({f"photo_read:{status}": 1}), now)
    return int(result.inserted_primary_key[0])


def save_reread(conn: Connection, draft: Draft, proposal: dict[str, Any], now: datetime) -> None:
    value = proposal.get("value")
    done = conn.execute(update(photo_readings).where(photo_readings.c.id == draft.id,
                                                     photo_readings.c.reading_id.is_(None)).values(
        proposal=json.dumps(proposal, ensure_ascii=False), proposed_value=value if isinstance(value, str) else None,
        reader_status=str(proposal["status"]), box_moved=True)).rowcount
    if not done:
        raise PhotoError("already_sent", f"photo {draft.id} was sent already")
    count(conn, Counter({"photo_box_moved": 1, f"photo_read:{proposal['status']}": 1}), now)


def _draft(row: Any) -> Draft:
    return Draft(row.id, row.user_id, row.payer_code, row.meter_serial, row.created_at, row.width, row.height,
                 json.loads(row.proposal), row.proposed_value, row.reader_status, bool(row.box_moved), row.reading_id,
                 row.value, row.edited, row.state, row.reason)


DRAFT_COLUMNS = [c for c in photo_readings.c if c.name != "image"]


def get_draft(conn: Connection, photo_id: int, payer_code: str) -> Draft | None:
    """The photo `photo_id` if it belongs to `payer_code` (else None: the same for unknown and not yours)."""
    row = conn.execute(select(*DRAFT_COLUMNS).where(photo_readings.c.id == photo_id,
                                                   photo_readings.c.payer_code == payer_code)).first()
    return _draft(row) if row else None


def image_of(conn: Connection, photo_id: int, payer_code: str) -> bytes | None:
    return conn.execute(select(photo_readings.c.image).where(photo_readings.c.id == photo_id,
                                                            photo_readings.c.payer_code == payer_code)).scalar()


def evidence_of(conn: Connection, reading_id: int) -> Draft | None:
    row = conn.execute(select(*DRAFT_COLUMNS).where(photo_readings.c.reading_id == reading_id)).first()
    return _draft(row) if row else None


def uploads_since(conn: Connection, user_id: int, since: datetime) -> int:
    return int(conn.execute(select(func.count()).select_from(photo_readings).where(
        photo_readings.c.user_id == user_id, photo_readings.c.created_at >= since)).scalar() or 0)


def purge_drafts(conn: Connection, now: datetime, ttl: timedelta = DRAFT_TTL) -> int:
    """Delete photos never sent that are older than `ttl` (a photo that became a reading is kept)."""
    return int(conn.execute(delete(photo_readings).where(and_(
        photo_readings.c.reading_id.is_(None), photo_readings.c.created_at < now - ttl))).rowcount or 0)


def meter_value(text: str, digits: int, decimals: int) -> str:
    """The resident's number in the meter's own format (`530` on a 5+3 meter → `00530.000`).

    PhotoError when it is no number, or has more digits than the meter's wheels."""
    import re

    text = text.strip().replace(",", ".")
    if not re.match(VALUE_PATTERN, text):
        raise PhotoError("not_a_value", f"{text[:30]!r} is not a meter value: digits with an optional decimal part")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise PhotoError("not_a_value", f"{text[:30]!r} is not a meter value") from None
    frac = text.partition(".")[2]
    if len(frac.rstrip("0")) > decimals:
        raise PhotoError("too_many_digits", f"{text} has {len(frac)} digits after the point; the meter has {decimals}")
    whole = str(int(number))
    if len(whole.lstrip("0")) > digits:
        raise PhotoError("too_many_digits", f"{text} has more digits before the point than the meter's {digits}")
    q = number.quantize(Decimal(1).scaleb(-decimals)) if decimals else number.to_integral_value()
    head, _, tail = f"{q:f}".partition(".")
    return head.zfill(digits) + (f".{tail}" if decimals else "")


@dataclass
class SendResult:
    action: str  # stored / review / refused
    photo_id: int
    value: str
    edited: bool
    reading_id: int | None = None
    verdict: Verdict | None = None
    period: str | None = None
    submission: MeterOutcome | None = None

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "photo_id": self.photo_id, "value": self.value, "edited": self.edited,
                "reading_id": self.reading_id, "period": self.period,
                "verdict": self.verdict.to_json() if self.verdict else None,
                "submission": self.submission.to_json() if self.submission else None}


def send(engine: Engine, config: BridgeConfig, photo_id: int, payer_code: str, value_text: str, *,
         gateways: Gateways | None, now: datetime | None = None, submit: bool = True, clock: Clock | None = None,
         sleep: Sleep = time.sleep) -> SendResult:
    """The resident confirms `value_text` for photo `photo_id` (module docstring: what happens).
    `gateways` are the caller's; without them (None) nothing can be submitted, so `submit` must be False."""
    from cloud_bridge.corrections import check_correction

    if submit and gateways is None:
        raise ValueError("photo send with submit=True needs the billing and loyalty gateways")
    clock = clock or (lambda: datetime.now(UTC))
    now = now or clock()
    limits = config.settlement
    with engine.begin() as conn:
        draft = get_draft(conn, photo_id, payer_code)
        if draft is None:
            raise PhotoError("no_photo", f"no photo {photo_id} of payer {payer_code}")
        if draft.sent:
            raise PhotoError("already_sent", f"photo {photo_id} was sent already (reading {draft.reading_id})")
        if draft.reader_status == "no_counter":
            raise PhotoError("no_counter", "the reader found no counter in this photo: move the box onto the "
                             "counter, or take another photo")
        meter = photo_binding(conn, payer_code, draft.meter_serial)
        if meter is None:
            raise PhotoError("no_meter", f"meter {draft.meter_serial} is no longer read for this payer")
        digits, decimals = wheels_of(conn, meter)
        value = meter_value(value_text, digits, decimals)
        proposed = draft.proposed_value
        edited = proposed is None or Decimal(proposed) != Decimal(value)
        verdict = check_correction(conn, meter.meter_serial, value, now, limits)
        result = SendResult(verdict.state if verdict.state != "accepted" else "stored", photo_id, value, edited,
                            verdict=verdict)
        if verdict.state == "refused":
            count(conn, Counter({"photo_refused:out_of_range": 1}), now)
            log.info("photo %s of meter %s: %s refused: %s", photo_id, meter.meter_serial, value, verdict.reason)
            return result
        raw = {"v": 1, "source": "photo", "photo_id": photo_id, "value": value, "proposed_value": proposed,
               "edited": edited, "box_moved": draft.box_moved, "reader": {
                   k: draft.proposal.get(k) for k in ("status", "confidence", "reason", "counter_box", "rotation_deg")}}
        confidence = draft.proposal.get("confidence")
        inserted = conn.execute(readings.insert().values(
            device_id=None, epoch=0, seq=0, taken_at=now, stored_at=now, status="ok", value=value, unit="m3",
            confidence=float(confidence) if isinstance(confidence, int | float) else 0.0,
            reason=None if verdict.accepted else f"review: {verdict.reason}", binding_id=meter.binding_id,
            model=str(draft.proposal.get("model") or "photo")[:128], raw=json.dumps(raw, ensure_ascii=False),
            source="photo")).inserted_primary_key
        assert inserted is not None
        reading_id = int(inserted[0])
        done = conn.execute(update(photo_readings).where(photo_readings.c.id == photo_id,
                                                         photo_readings.c.reading_id.is_(None)).values(
            reading_id=reading_id, value=value, edited=edited, state=verdict.state, reason=verdict.reason,
            sent_at=now)).rowcount
        if not done:  # another worker sent it a moment ago: this transaction stores nothing
            raise PhotoError("already_sent", f"photo {photo_id} was sent already")
        count(conn, Counter({f"photo_sent:{'edited' if edited else 'as_read'}": 1,
                             f"photo_sent:{verdict.state}": 1}), now)
        settle_meter(conn, meter.meter_serial, limits, now, since=now - timedelta(days=limits.lookback_days))
        result.reading_id = reading_id
    log.info("photo %s of meter %s stored as reading %s: %s (%s, %s)", photo_id, meter.meter_serial, reading_id,
             value, "edited" if edited else "as read", verdict.state)
    if verdict.accepted and submit:
        result.period, result.submission = _submit(engine, config, payer_code, meter.meter_serial, now,
                                                   gateways, clock, sleep)
    return result


def _submit(engine: Engine, config: BridgeConfig, payer_code: str, meter_serial: str, now: datetime,
            gateways: Gateways | None, clock: Clock,
            sleep: Sleep) -> tuple[str, MeterOutcome | None]:
    """The submission pass for this one meter, when its period's window is open (else the timer's pass
    takes it when the window opens). The same pass, keys and rules as every reading's."""
    from cloud_bridge.submission.passes import run_submission_pass, window_rule
    from cloud_bridge.submission.periods import Period

    rule = window_rule(config)
    period = Period.of(now, rule.tz)
    opens, closes = rule.window(period)
    if not (config.submission.window_always_open or opens <= now < closes):
        return str(period), None
    report = run_submission_pass(engine, config, now, period=period, gateways=gateways, clock=clock,
                                 sleep=sleep, only=[(payer_code, meter_serial)])
    mine = [m for m in report.meters if m.payer_code == payer_code and m.meter_serial == meter_serial]
    return str(period), mine[-1] if mine else None


@dataclass(frozen=True)
class SentPhoto:
    """A photo reading as operators review it."""

    photo_id: int
    reading_id: int
    payer_code: str
    meter_serial: str
    sent_at: datetime
    value: str
    proposed_value: str | None
    edited: bool
    box_moved: bool
    reader_status: str
    confidence: float
    state: str  # accepted / review (the checks when sent)
    reason: str | None
    confirmed_value: str | None  # an operator's (or anyone's) accepted correction since

    @property
    def waiting(self) -> bool:
        """Held for review and nobody confirmed it yet: not billed until an operator does."""
        return self.state == "review" and self.confirmed_value is None


def sent_photos(conn: Connection, *, waiting_only: bool = False, limit: int = 100,
                photo_id: int | None = None) -> list[SentPhoto]:
    """Photo readings, newest first (`waiting_only`: those held for an operator to confirm)."""
    from cloud_bridge.settlement import latest_accepted_corrections

    lc = latest_accepted_corrections()
    q = (select(photo_readings.c.id, photo_readings.c.reading_id, photo_readings.c.payer_code,
                photo_readings.c.meter_serial, photo_readings.c.sent_at, photo_readings.c.value,
                photo_readings.c.proposed_value, photo_readings.c.edited, photo_readings.c.box_moved,
                photo_readings.c.reader_status, readings.c.confidence, photo_readings.c.state, photo_readings.c.reason,
                lc.c.value.label("confirmed"))
         .join(readings, readings.c.id == photo_readings.c.reading_id)
         .outerjoin(lc, lc.c.reading_id == photo_readings.c.reading_id)
         .where(photo_readings.c.reading_id.is_not(None)))
    if waiting_only:
        q = q.where(photo_readings.c.state == "review", lc.c.id.is_(None))
    if photo_id is not None:
        q = q.where(photo_readings.c.id == photo_id)
    rows = conn.execute(q.order_by(photo_readings.c.sent_at.desc(), photo_readings.c.id.desc()).limit(limit)).all()
    return [SentPhoto(r.id, r.reading_id, r.payer_code, r.meter_serial, r.sent_at, r.value, r.proposed_value,
                      bool(r.edited), bool(r.box_moved), r.reader_status, float(r.confidence), r.state, r.reason,
                      r.confirmed) for r in rows]


def photo_image(conn: Connection, photo_id: int) -> bytes | None:
    """A sent photo's image for operators (drafts are the resident's own until sent)."""
    return conn.execute(select(photo_readings.c.image).where(photo_readings.c.id == photo_id,
                                                            photo_readings.c.reading_id.is_not(None))).scalar()
