"""Loyalty points: one ledger row per (payer code, period), appended in the same transaction that
records billing's acceptance; then the credit is reported to the loyalty API through the same outbox
mechanics as submissions, with its own idempotency key `credit:payer:period`.

A payer with a cold and a hot meter earns points once a month, whichever is accepted first; a
correction that is accepted later earns nothing more (the unique (payer_code, period) says so)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from cloud_bridge.delivery import Clock, OutboxSpec, RetryPolicy, Sleep, deliver, due_rows
from cloud_bridge.gateways.base import CreditRequest, LoyaltyGateway
from cloud_bridge.store.tables import points_ledger, submissions

log = logging.getLogger(__name__)

CREDITS = OutboxSpec(points_ledger, points_ledger.c.credit_state, points_ledger.c.credit_reason,
                     points_ledger.c.credit_id, "credited")
CREDIT_REASON = "meter reading submitted"


def credit_key(payer_code: str, period: str) -> str:
    return f"credit:{payer_code}:{period}"


@dataclass(frozen=True)
class CreditOutcome:
    key: str
    payer_code: str
    period: str
    points: int
    state: str
    reason: str | None
    credit_id: str | None
    attempts: int


def append_points(conn: Connection, submission_row_id: int, points: int, now: datetime) -> bool:
    """Add the period's points for the submission's payer unless they have them already.
    Returns True when a row was added. Safe against a concurrent worker (ON CONFLICT DO NOTHING)."""
    if points <= 0:
        return False
    sub = conn.execute(select(submissions.c.payer_code, submissions.c.period)
                       .where(submissions.c.id == submission_row_id)).one()
    values = dict(payer_code=sub.payer_code, period=sub.period, points=points, submission_id=submission_row_id,
                  created_at=now, updated_at=now, idempotency_key=credit_key(sub.payer_code, sub.period),
                  credit_state="pending", attempts=0)
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    # RETURNING, not rowcount: psycopg 3 under SQLAlchemy 2.1 reports rowcount -1 for this statement.
    stmt = dialect.insert(points_ledger).values(**values).on_conflict_do_nothing().returning(points_ledger.c.id)
    return conn.execute(stmt).first() is not None


def deliver_due_credits(
    engine: Engine,
    gateway: LoyaltyGateway,
    *,
    policy: RetryPolicy,
    lease_s: float,
    clock: Clock,
    sleep: Sleep,
    period: str | None = None,
    limit: int = 1000,
) -> list[CreditOutcome]:
    """Report every due credit to the loyalty API; returns what happened to each one it touched."""
    out = []
    for row in due_rows(engine, CREDITS, clock(), period=period, limit=limit):
        request = CreditRequest(row.payer_code, row.period, row.points, CREDIT_REASON)
        result = deliver(engine, CREDITS, row.id, partial(gateway.credit, request, row.idempotency_key),
                         policy=policy, lease_s=lease_s, clock=clock, sleep=sleep)
        if result is None:
            continue
        out.append(CreditOutcome(row.idempotency_key, row.payer_code, row.period, row.points, result.state,
                                 result.reason, result.ref, result.attempts))
    return out
