"""Device health for the retained `meters/{id}/telemetry` topic."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from contract.payloads import Telemetry

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temp_c(path: Path = THERMAL_ZONE) -> float | None:
    """The SoC temperature in °C (the file holds millidegrees); None where it is not readable."""
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def free_disk_bytes(path: Path) -> int | None:
    try:
        return int(shutil.disk_usage(path).free)
    except OSError:
        return None


def build_telemetry(
    *,
    uptime_s: float,
    outbox_depth: int,
    outbox_dropped: int,
    outbox_rejected: int = 0,
    last_error: str | None,
    state_dir: Path,
    disk_full: bool,
    model: str,
    version: str,
    last_seq: int | None,
    commands_refused: int,
    reanchors: int = 0,
    stall_reconnects: int = 0,
    at: datetime | None = None,
) -> Telemetry:
    return Telemetry(
        uptime_s=round(max(0.0, uptime_s), 3),
        outbox_depth=outbox_depth,
        outbox_dropped=outbox_dropped,
        outbox_rejected=outbox_rejected,
        last_error=None if last_error is None else last_error[:500],
        cpu_temp_c=cpu_temp_c(),
        free_disk_bytes=free_disk_bytes(state_dir),
        disk_full=disk_full,
        model=model,
        version=version,
        last_seq=last_seq,
        commands_refused=commands_refused,
        reanchors=max(int(reanchors), 0),
        stall_reconnects=max(int(stall_reconnects), 0),
        at=at or datetime.now(UTC),
    )
