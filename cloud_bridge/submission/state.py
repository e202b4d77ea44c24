"""Submission and loyalty state as the fleet's device-state topic shows it (`bridge/devices/{id}/state`).

The bridge's fleet code calls these with the device id; they read the device's current binding (or its
last one) and the newest outbox rows of that meter and payer. No payer code leaves here."""

from __future__ import annotations

from sqlalchemy import Connection, select

from cloud_bridge.store.tables import bindings, points_ledger, submissions
from contract.payloads import LoyaltyView, SubmissionView


def _binding_of(conn: Connection, device_id: str) -> tuple[str, str] | None:
    row = conn.execute(
        select(bindings.c.payer_code, bindings.c.meter_serial).where(bindings.c.device_id == device_id)
        .order_by(bindings.c.valid_to.is_(None).desc(), bindings.c.valid_from.desc(), bindings.c.id.desc()).limit(1)
    ).first()
    return None if row is None else (row.payer_code, row.meter_serial)


def submission_state_for(conn: Connection, device_id: str) -> SubmissionView | None:
    """The newest submission of the device's meter and payer: period, state, value and reason
    (e.g. `refused` / `decreasing_value`, `needs_attention` / `only_suspect_readings …`)."""
    bound = _binding_of(conn, device_id)
    if bound is None:
        return None
    row = conn.execute(
        select(submissions.c.period, submissions.c.state, submissions.c.value, submissions.c.reason)
        .where(submissions.c.payer_code == bound[0], submissions.c.meter_serial == bound[1])
        .order_by(submissions.c.period.desc(), submissions.c.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return SubmissionView(period=row.period, state=row.state, value=row.value, reason=row.reason)


def loyalty_state_for(conn: Connection, device_id: str) -> LoyaltyView | None:
    """The newest points row of the device's payer: period, points and whether loyalty has it."""
    bound = _binding_of(conn, device_id)
    if bound is None:
        return None
    row = conn.execute(
        select(points_ledger.c.period, points_ledger.c.points, points_ledger.c.credit_state)
        .where(points_ledger.c.payer_code == bound[0])
        .order_by(points_ledger.c.period.desc(), points_ledger.c.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    return LoyaltyView(period=row.period, points=row.points, state=row.credit_state)
