"""The systemd unit: the keys the issue asks for, and `systemd-analyze verify` (where it exists) with no
complaint about unknown keys or bad values (it exits 0 on unknown keys, so its stderr is read)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "meter-edge.service"
SETUP_UNIT = UNIT.with_name("meter-edge-setup.service")


def _entries(unit: Path = UNIT) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_unit_has_notify_watchdog_credentials_state_and_hardening() -> None:
    e = _entries()
    assert e["Type"] == ["notify"] and int(e["WatchdogSec"][0]) > 0
    assert e["Restart"] == ["on-failure"]
    assert any(v.startswith("mqtt-password:") for v in e["LoadCredential"])
    assert "EDGE_MQTT__PASSWORD_FILE=mqtt-password" in e["Environment"]
    assert e["StateDirectory"] == ["meter-edge"] and "EDGE_STATE_DIR=%S/meter-edge" in e["Environment"]
    for key, value in {"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "DevicePolicy": "closed"}.items():
        assert e[key] == [value], key
    assert set(e["SupplementaryGroups"][0].split()) == {"video", "gpio"}
    assert "run --config" in e["ExecStart"][0]
    assert e["ExecReload"] == ["/bin/kill -HUP $MAINPID"]  # the agent's reload (edge/agent/local.py)


def test_setup_unit_stops_the_agent_shares_its_state_and_starts_it_again() -> None:
    e = _entries(SETUP_UNIT)
    assert e["Conflicts"] == ["meter-edge.service"]  # the camera has one user
    assert e["User"] == _entries()["User"] and e["StateDirectory"] == ["meter-edge"]
    assert "EDGE_STATE_DIR=%S/meter-edge" in e["Environment"]
    assert "setup --config" in e["ExecStart"][0] and "start meter-edge.service" in e["ExecStopPost"][0]
    assert e["RuntimeMaxSec"] and "WantedBy" not in e  # on demand only, never at boot


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
@pytest.mark.parametrize("source", [UNIT, SETUP_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify_is_clean(tmp_path: Path, source: Path) -> None:
    # The real ExecStart points at /opt/meter-reader; verify a copy that points at this checkout's script.
    exe = Path(sys.executable).parent / "meter-edge"
    unit = tmp_path / source.name
    unit.write_text(source.read_text().replace("/opt/meter-reader/.venv/bin/meter-edge", str(exe)))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    complaints = [line for line in proc.stderr.splitlines()
                  if source.name in line
                  and any(w in line for w in ("Unknown", "unknown", "Invalid", "invalid", "ignoring", "Failed",
                                              "not executable", "deprecated"))]
    assert complaints == [], proc.stderr
    assert proc.returncode == 0, proc.stderr
