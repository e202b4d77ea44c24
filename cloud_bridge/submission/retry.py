"""Backoff for the outboxes: exponential with jitter, honouring Retry-After, bounded per pass."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
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
