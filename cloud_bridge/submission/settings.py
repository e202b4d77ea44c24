"""The `submission` config section: retries, leases, the timer."""

from __future__ import annotations

from pydantic import Field

from contract.settings import Section


class SubmissionSection(Section):
    timeout_s: float = Field(10.0, gt=0, le=300, description="HTTP timeout for billing and loyalty calls.")
    max_attempts_per_pass: int = Field(
        4, ge=1, le=100, description="Attempts per item in one pass; then it waits for a later pass.")
    backoff_base_s: float = Field(1.0, ge=0, description="First retry waits about this long, doubling each time.")
    backoff_max_s: float = Field(300.0, ge=0, description="Longest wait between two attempts.")
    max_wait_in_pass_s: float = Field(
        30.0, ge=0, description="A longer wait (e.g. a long Retry-After) is left to a later pass.")
    lease_s: float = Field(
        60.0, gt=0, description="An item being sent is another worker's for this long; after a crash it is "
        "retried with the same idempotency key once the lease runs out.")
    pass_every_s: float = Field(300.0, gt=0, description="How often the running bridge runs a submission pass.")
    window_always_open: bool = Field(
        False, description="Treat the current period's window as open (the demo; never in production).")

