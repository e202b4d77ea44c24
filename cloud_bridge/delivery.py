"""Delivery through an outbox row: claim it, call the gateway outside any transaction, record the answer.
Shared by the submission outbox (`submissions`, to billing) and the loyalty credits (`points_ledger`).

The row is marked `sending` (with its idempotency key already on it) and committed BEFORE the HTTP call,
so a process killed between "billing stored it" and "we recorded that" leaves a `sending` row behind; once
its lease (`next_attempt_at`) runs out, the next pass sends the same payload with the same key and billing
answers what it answered the first time. Claiming is a compare-and-set UPDATE, so several workers (or a
worker and an operator's `submit`) never send the same row at the same time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, Engine, Table, and_, or_, select, update

from cloud_bridge.gateways.base import Accepted, GatewayAnswer, Refused, TryLater

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for the outboxes: exponential with jitter, honouring Retry-After, bounded per pass."""

    max_attempts_per_pass: int = 4
    base_s: float = 1.0
    max_s: float = 300.0
    max_wait_in_pass_s: float = 30.0  # a longer wait (a long Retry-After) is left to a later pass

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempt`-th failed attempt (1-based): "equal jitter" on
        base·2^(n-1) capped at max_s, and never less than the server's Retry-After."""
        r = rng or random
        ceiling = min(self.max_s, self.base_s * 2 ** max(0, attempt - 1))
        wait = ceiling / 2 + r.uniform(0, ceiling / 2)
        if retry_after is not None:
            wait = max(wait, retry_after + r.uniform(0, min(self.base_s, 1.0) / 2))
        return wait


@dataclass(frozen=True)
class OutboxSpec:
    """One outbox table: which columns hold its state, reason and the remote id."""

    table: Table
    state: Column  # type: ignore[type-arg]
    reason: Column  # type: ignore[type-arg]
    ref: Column  # type: ignore[type-arg]
    done: str  # the success state: accepted / credited

    def due(self, now: datetime):  # type: ignore[no-untyped-def]
        """Rows a pass may send now: pending and due, or sending with an expired lease (a crash)."""
        t = self.table.c
        return or_(
            and_(self.state == "pending", or_(t.next_attempt_at.is_(None), t.next_attempt_at <= now)),
            and_(self.state == "sending", t.next_attempt_at <= now),
        )


def due_rows(engine: Engine, spec: OutboxSpec, now: datetime, *, period: str | None = None,
             limit: int | None = None) -> list[Any]:
    """The rows of `spec` a pass may send at `now`, oldest first (only `period`'s when given)."""
    t = spec.table.c
    query = select(spec.table).where(spec.due(now)).order_by(t.id)
    if period is not None:
        query = query.where(t.period == period)
    if limit is not None:
        query = query.limit(limit)
    with engine.begin() as conn:
        return list(conn.execute(query).all())


@dataclass(frozen=True)
class Delivery:
    state: str
    reason: str | None
    ref: str | None
    attempts: int  # made in this pass


def claim(conn: Connection, spec: OutboxSpec, row_id: int, now: datetime, lease_s: float) -> int | None:
    """Mark the row `sending` if it is due; returns its attempt number, or None if not ours to send."""
    t = spec.table.c
    result = conn.execute(
        update(spec.table)
        .where(t.id == row_id, spec.due(now))
        .values({spec.state: "sending", t.attempts: t.attempts + 1,
                 t.next_attempt_at: now + timedelta(seconds=lease_s), t.updated_at: now})
    )
    if result.rowcount != 1:
        return None
    return int(conn.execute(select(t.attempts).where(t.id == row_id)).scalar_one())


def deliver(
    engine: Engine,
    spec: OutboxSpec,
    row_id: int,
    send: Callable[[], GatewayAnswer],
    *,
    policy: RetryPolicy,
    lease_s: float,
    clock: Clock,
    sleep: Sleep,
    on_done: Callable[[Connection, int, Accepted], None] | None = None,
) -> Delivery | None:
    """Send one row with bounded retries in this pass. None: the row was not due or another worker has it."""
    t = spec.table.c
    made = 0
    while True:
        with engine.begin() as conn:
            attempt = claim(conn, spec, row_id, clock(), lease_s)
        if attempt is None:
            return None if made == 0 else Delivery("pending", None, None, made)
        made += 1
        answer = send()
        now = clock()
        mine = and_(t.id == row_id, spec.state == "sending", t.attempts == attempt)
        delay = 0.0
        with engine.begin() as conn:
            values: dict[Any, Any]
            if isinstance(answer, Accepted):
                values = {spec.state: spec.done, spec.ref: answer.ref, spec.reason: None, t.next_attempt_at: None}
                state, reason, ref = spec.done, None, answer.ref
            elif isinstance(answer, Refused):
                values = {spec.state: "refused", spec.reason: answer.code, t.next_attempt_at: None}
                state, reason, ref = "refused", answer.code, None
            else:
                delay = policy.delay(attempt, answer.retry_after)
                reason = f"retrying: {answer.reason}"
                values = {spec.state: "pending", spec.reason: reason,
                          t.next_attempt_at: now + timedelta(seconds=delay)}
                state, ref = "pending", None
            values[t.updated_at] = now
            if conn.execute(update(spec.table).where(mine).values(values)).rowcount != 1:
                log.warning("%s row %s was taken over by another worker (lease ran out); its answer stands",
                            spec.table.name, row_id)
                return Delivery(state, reason, ref, made)
            if isinstance(answer, Accepted) and on_done is not None:
                on_done(conn, row_id, answer)
        if not isinstance(answer, TryLater):
            return Delivery(state, reason, ref, made)
        if not answer.retry_now or made >= policy.max_attempts_per_pass or delay > policy.max_wait_in_pass_s:
            log.info("%s row %s: %s; next attempt in %.1f s", spec.table.name, row_id, answer.reason, delay)
            return Delivery(state, reason, ref, made)
        sleep(delay)
