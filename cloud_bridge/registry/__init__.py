"""Device registry: device -> meter (serial, cold/hot) -> payer code (10 digits) -> address.

A binding is in force from `valid_from` until `valid_to` (NULL: still in force). A re-bind closes the
open binding and opens a new one in the same transaction, so history is kept and a reading is always
attributed to exactly one binding (or none). The database enforces at most one open binding per device.

Most meters in a city have no device: residents photograph them (the portal's photo page). Such a meter
has a binding with no device (`add_photo_meter`, `meter-bridge meters add`), at most one open per meter;
a Pi installed later on it takes over (`bind` closes the device-less binding at the same instant), and
residents may photograph a meter with a Pi too: a photo reading is filed under whichever binding of
the meter and payer is in force (`photo_binding`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, and_, select
from sqlalchemy.exc import IntegrityError

from cloud_bridge.accounts.roles import AccountError, check_account_name
from cloud_bridge.store.tables import bindings, devices, meters, payers, utcnow
from contract import topics
from contract.payloads import format_utc, mask_payer

PAYER_CODE_RE = re.compile(r"^[0-9]{10}$")
METER_SERIAL_RE = re.compile(r"^[A-Za-z0-9._/-]{1,64}$")
MeterKind = Literal["cold", "hot"]


class RegistryError(ValueError):
    """An installer's request that cannot be done; the message says why and what to do instead."""


def check_device_id(device_id: str) -> str:
    if not topics.is_valid_device_id(device_id):
        raise RegistryError(f"device id {device_id!r} is not valid: use 1-64 of A-Z a-z 0-9 _ - "
                            "(it becomes a topic level, a broker user and a client id)")
    try:
        return check_account_name(device_id)
    except AccountError as exc:
        raise RegistryError(f"device id {device_id!r}: {exc}") from None


def check_payer_code(code: str) -> str:
    if not PAYER_CODE_RE.match(code):
        raise RegistryError(f"payer code {code!r} is not valid: it is exactly 10 digits, e.g. 0123456789")
    return code


def check_meter_serial(serial: str) -> str:
    if not METER_SERIAL_RE.match(serial):
        raise RegistryError(f"meter serial {serial!r} is not valid: 1-64 of A-Z a-z 0-9 . _ / -")
    return serial


@dataclass(frozen=True)
class Binding:
    id: int
    device_id: str | None  # None: a meter read from residents' photos
    meter_serial: str
    kind: MeterKind
    payer_code: str
    address: str
    valid_from: datetime
    valid_to: datetime | None

    def as_json(self, *, show_payer: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not show_payer:
            d["payer_code"] = mask_payer(self.payer_code)
            d.pop("address")
        d["valid_from"] = format_utc(self.valid_from)
        d["valid_to"] = format_utc(self.valid_to) if self.valid_to else None
        return d


def _binding_query() -> Any:
    return (select(bindings.c.id, bindings.c.device_id, bindings.c.meter_serial, meters.c.kind,
                   bindings.c.payer_code, payers.c.address, bindings.c.valid_from, bindings.c.valid_to)
            .join(meters, meters.c.serial == bindings.c.meter_serial)
            .join(payers, payers.c.payer_code == bindings.c.payer_code))


def binding_in_force(conn: Connection, device_id: str) -> Binding | None:
    row = conn.execute(_binding_query().where(
        and_(bindings.c.device_id == device_id, bindings.c.valid_to.is_(None)))).first()
    return Binding(*row) if row else None


def binding_history(conn: Connection, device_id: str) -> list[Binding]:
    rows = conn.execute(_binding_query().where(bindings.c.device_id == device_id)
                        .order_by(bindings.c.valid_from, bindings.c.id)).all()
    return [Binding(*r) for r in rows]


def device_exists(conn: Connection, device_id: str) -> bool:
    return conn.execute(select(devices.c.device_id).where(devices.c.device_id == device_id)).first() is not None


def add_device(conn: Connection, device_id: str, note: str | None = None, *, now: datetime | None = None) -> None:
    check_device_id(device_id)
    if device_exists(conn, device_id):
        raise RegistryError(f"device {device_id} already exists (use `devices add {device_id} --new-password` "
                            "to issue a new broker password)")
    conn.execute(devices.insert().values(device_id=device_id, created_at=now or utcnow(), note=note))


def _require_device(conn: Connection, device_id: str) -> None:
    check_device_id(device_id)
    if not device_exists(conn, device_id):
        raise RegistryError(f"unknown device {device_id}: add it first with `meter-bridge devices add {device_id}`")


def _require_active(conn: Connection, device_id: str) -> None:
    _require_device(conn, device_id)
    if retired_at(conn, device_id) is not None:
        raise RegistryError(f"device {device_id} is retired: a new Pi needs its own id (`devices add`, then "
                            "`devices replace`)")


def _ensure_meter(conn: Connection, serial: str, kind: MeterKind | None, now: datetime) -> MeterKind:
    check_meter_serial(serial)
    have = conn.execute(select(meters.c.kind).where(meters.c.serial == serial)).scalar()
    if have is None:
        if kind is None:
            raise RegistryError(f"meter {serial} is new: say whether it is --kind cold or --kind hot")
        conn.execute(meters.insert().values(serial=serial, kind=kind, created_at=now))
        return kind
    if kind is not None and kind != have:
        raise RegistryError(f"meter {serial} is registered as {have}, not {kind}")
    return have  # type: ignore[return-value]


def _ensure_payer(conn: Connection, code: str, address: str | None, now: datetime) -> None:
    check_payer_code(code)
    have = conn.execute(select(payers.c.address).where(payers.c.payer_code == code)).first()
    if have is None:
        if not address or not address.strip():
            raise RegistryError(f"payer {mask_payer(code)} is new: give its --address")
        conn.execute(payers.insert().values(payer_code=code, address=address.strip(), created_at=now, updated_at=now))
    elif address and address.strip() != have[0]:
        conn.execute(payers.update().where(payers.c.payer_code == code)
                     .values(address=address.strip(), updated_at=now))


def _meter_bound_elsewhere(conn: Connection, serial: str, device_id: str) -> str | None:
    return conn.execute(select(bindings.c.device_id).where(and_(
        bindings.c.meter_serial == serial, bindings.c.valid_to.is_(None),
        bindings.c.device_id != device_id))).scalar()


def _open_binding(conn: Connection, device_id: str, serial: str, kind: MeterKind | None, payer_code: str,
                  address: str | None, now: datetime) -> Binding:
    _ensure_meter(conn, serial, kind, now)
    _ensure_payer(conn, payer_code, address, now)
    other = _meter_bound_elsewhere(conn, serial, device_id)
    if other:
        raise RegistryError(f"meter {serial} is bound to device {other}: rebind or unbind that device first")
    photo = _open_photo_binding(conn, serial)
    if photo is not None:
        if photo.payer_code != payer_code:
            raise RegistryError(f"meter {serial} is read from photos for payer {mask_payer(photo.payer_code)}, not "
                                f"{mask_payer(payer_code)}: `meter-bridge meters remove {serial}` first")
        # the Pi takes over the meter; residents may still photograph it (filed under the Pi's binding)
        _close_binding(conn, photo, now)
    try:
        with conn.begin_nested():
            conn.execute(bindings.insert().values(
                device_id=device_id, meter_serial=serial, payer_code=payer_code, valid_from=now))
    except IntegrityError:
        raise RegistryError(f"device {device_id} got bound by someone else just now; list it and retry") from None
    b = binding_in_force(conn, device_id)
    assert b is not None
    return b


def bind(conn: Connection, device_id: str, *, meter_serial: str, kind: MeterKind | None, payer_code: str,
         address: str | None, now: datetime | None = None) -> Binding:
    """Bind an unbound device. A device already bound needs `rebind` (so nobody moves one by accident)."""
    _require_active(conn, device_id)
    check_payer_code(payer_code)
    current = binding_in_force(conn, device_id)
    if current is not None:
        raise RegistryError(
            f"device {device_id} is already bound to meter {current.meter_serial} "
            f"(payer {mask_payer(current.payer_code)}) since {current.valid_from:%Y-%m-%d %H:%M}Z: "
            "use `meter-bridge rebind` to move it")
    return _open_binding(conn, device_id, meter_serial, kind, payer_code, address, now or utcnow())


def rebind(conn: Connection, device_id: str, *, meter_serial: str, payer_code: str, kind: MeterKind | None = None,
           address: str | None = None, now: datetime | None = None) -> tuple[Binding, Binding]:
    """Close the device's open binding and open a new one at the same instant. Returns (old, new)."""
    _require_active(conn, device_id)
    check_payer_code(payer_code)
    now = now or utcnow()
    current = binding_in_force(conn, device_id)
    if current is None:
        raise RegistryError(f"device {device_id} is not bound: use `meter-bridge bind` first")
    if current.meter_serial == meter_serial and current.payer_code == payer_code:
        raise RegistryError(f"device {device_id} is already bound to meter {meter_serial} and that payer")
    closed = _close_binding(conn, current, now)
    new = _open_binding(conn, device_id, meter_serial, kind, payer_code, address, now)
    return closed, new


def _close_binding(conn: Connection, b: Binding, now: datetime) -> Binding:
    """End binding `b` at `now`; returns it as closed."""
    conn.execute(bindings.update().where(bindings.c.id == b.id).values(valid_to=now))
    return Binding(**{**asdict(b), "valid_to": now})


def unbind(conn: Connection, device_id: str, *, now: datetime | None = None) -> Binding:
    _require_device(conn, device_id)
    current = binding_in_force(conn, device_id)
    if current is None:
        raise RegistryError(f"device {device_id} is not bound")
    return _close_binding(conn, current, now or utcnow())


def retired_at(conn: Connection, device_id: str) -> datetime | None:
    return conn.execute(select(devices.c.retired_at).where(devices.c.device_id == device_id)).scalar()


def retire(conn: Connection, device_id: str, *, now: datetime | None = None) -> Binding | None:
    """Mark the device retired and close its binding (if any). Its readings and bindings stay as they are.
    Returns the binding it closed."""
    _require_device(conn, device_id)
    if retired_at(conn, device_id) is not None:
        raise RegistryError(f"device {device_id} is retired already")
    now = now or utcnow()
    closed = unbind(conn, device_id, now=now) if binding_in_force(conn, device_id) else None
    conn.execute(devices.update().where(devices.c.device_id == device_id).values(retired_at=now))
    return closed


def replace(conn: Connection, old: str, new: str, *, now: datetime | None = None) -> tuple[Binding, Binding]:
    """A new Pi at the same meter: OLD's binding is closed and NEW is bound to the same meter and payer at
    the same instant, so the meter's history goes on; OLD is retired. Returns (closed, opened)."""
    _require_device(conn, old)
    _require_device(conn, new)
    if old == new:
        raise RegistryError("OLD and NEW are the same device")
    if retired_at(conn, old) is not None:
        by = conn.execute(select(devices.c.replaced_by).where(devices.c.device_id == old)).scalar()
        raise RegistryError(f"device {old} is retired already" + (f" (replaced by {by})" if by else ""))
    if retired_at(conn, new) is not None:
        raise RegistryError(f"device {new} is retired: add a new device id for the new Pi")
    current = binding_in_force(conn, old)
    if current is None:
        raise RegistryError(f"device {old} is not bound to a meter: bind {new} with `meter-bridge bind` instead")
    other = binding_in_force(conn, new)
    if other is not None:
        raise RegistryError(f"device {new} is already bound to meter {other.meter_serial}: unbind it first")
    now = now or utcnow()
    closed = retire(conn, old, now=now)
    assert closed is not None
    opened = _open_binding(conn, new, current.meter_serial, None, current.payer_code, None, now)
    conn.execute(devices.update().where(devices.c.device_id == old).values(replaced_by=new))
    return closed, opened


# --------------------------------------------------------------------------- meters with no device
def _open_photo_binding(conn: Connection, serial: str) -> Binding | None:
    row = conn.execute(_binding_query().where(and_(
        bindings.c.meter_serial == serial, bindings.c.device_id.is_(None), bindings.c.valid_to.is_(None)))).first()
    return Binding(*row) if row else None


def check_wheels(digits: int | None, decimals: int | None) -> None:
    if digits is not None and not 1 <= digits <= 12:
        raise RegistryError(f"--digits {digits}: a meter has 1-12 black wheels (before the point)")
    if decimals is not None and not 0 <= decimals <= 6:
        raise RegistryError(f"--decimals {decimals}: a meter has 0-6 red wheels (after the point)")


def set_wheels(conn: Connection, serial: str, digits: int | None, decimals: int | None) -> None:
    """Record how many wheels meter `serial` shows (None leaves that one as it is)."""
    check_wheels(digits, decimals)
    values = {k: v for k, v in (("digits", digits), ("decimals", decimals)) if v is not None}
    if values:
        conn.execute(meters.update().where(meters.c.serial == serial).values(**values))


def add_photo_meter(conn: Connection, serial: str, *, payer_code: str, kind: MeterKind | None,
                    address: str | None, digits: int | None = None, decimals: int | None = None,
                    now: datetime | None = None) -> Binding:
    """Register a meter that residents read from photos (no device) for `payer_code`.

    A meter a Pi already reads for the same payer needs no new binding (its residents may photograph it
    as it is): only its wheels are recorded. Returns the binding photos of it are filed under."""
    check_payer_code(payer_code)
    check_wheels(digits, decimals)
    now = now or utcnow()
    _ensure_meter(conn, serial, kind, now)
    _ensure_payer(conn, payer_code, address, now)
    current = conn.execute(_binding_query().where(and_(bindings.c.meter_serial == serial,
                                                       bindings.c.valid_to.is_(None)))).all()
    for row in current:
        b = Binding(*row)
        if b.payer_code != payer_code:
            holder = f"device {b.device_id}" if b.device_id else "photos"
            raise RegistryError(f"meter {serial} is read by {holder} for payer {mask_payer(b.payer_code)}: "
                                "unbind it there first")
    if current:
        set_wheels(conn, serial, digits, decimals)
        return Binding(*current[0])
    set_wheels(conn, serial, digits, decimals)
    try:
        with conn.begin_nested():
            conn.execute(bindings.insert().values(device_id=None, meter_serial=serial, payer_code=payer_code,
                                                  valid_from=now, note="read from residents' photos"))
    except IntegrityError:
        raise RegistryError(f"meter {serial} got registered by someone else just now; list it and retry") from None
    opened = _open_photo_binding(conn, serial)
    assert opened is not None
    return opened


def remove_photo_meter(conn: Connection, serial: str, *, now: datetime | None = None) -> Binding:
    """Close meter `serial`'s device-less binding (the meter was removed or changed hands). Its readings stay."""
    check_meter_serial(serial)
    b = _open_photo_binding(conn, serial)
    if b is None:
        raise RegistryError(f"meter {serial} is not registered for photos (see `meter-bridge meters list`)")
    return _close_binding(conn, b, now or utcnow())


@dataclass(frozen=True)
class PhotoMeter:
    """A meter a resident may photograph: its binding in force for the payer and the wheels it shows."""

    binding_id: int
    meter_serial: str
    kind: str
    device_id: str | None
    digits: int | None
    decimals: int | None


def photo_meters(conn: Connection, payer_code: str) -> list[PhotoMeter]:
    """Every meter in force for `payer_code` (with a device or not), cold before hot."""
    rows = conn.execute(
        select(bindings.c.id, bindings.c.meter_serial, meters.c.kind, bindings.c.device_id, meters.c.digits,
               meters.c.decimals)
        .join(meters, meters.c.serial == bindings.c.meter_serial)
        .where(bindings.c.payer_code == payer_code, bindings.c.valid_to.is_(None))
        .order_by(meters.c.kind, bindings.c.meter_serial)).all()
    seen: dict[str, PhotoMeter] = {}
    for r in rows:  # a device's binding wins over a device-less one left open by an older bridge
        if r.meter_serial not in seen or r.device_id is not None:
            seen[r.meter_serial] = PhotoMeter(r.id, r.meter_serial, r.kind, r.device_id, r.digits, r.decimals)
    return list(seen.values())


def photo_binding(conn: Connection, payer_code: str, meter_serial: str) -> PhotoMeter | None:
    """The binding a photo of `meter_serial` for `payer_code` is filed under now, or None."""
    return next((m for m in photo_meters(conn, payer_code) if m.meter_serial == meter_serial), None)


def list_photo_meters(conn: Connection) -> list[Binding]:
    """Meters read from photos only (device-less bindings in force)."""
    rows = conn.execute(_binding_query().where(and_(bindings.c.device_id.is_(None), bindings.c.valid_to.is_(None)))
                        .order_by(bindings.c.meter_serial)).all()
    return [Binding(*r) for r in rows]


def open_bindings(conn: Connection) -> dict[str, Binding]:
    """Every device's binding in force, by device id (with the payer's address, for `devices list`)."""
    found = (Binding(*r) for r in conn.execute(_binding_query().where(bindings.c.valid_to.is_(None))).all())
    return {b.device_id: b for b in found if b.device_id is not None}
