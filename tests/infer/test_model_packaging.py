"""A plain (non-editable) install, as on a Pi, carries the bundled model and its sidecar."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_wheel_ships_the_model_and_its_sidecar(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("meter_reader-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("digits.tflite", "digits.json"):
        assert any(n.endswith(f"/data/share/meter-reader/models/{f}") for n in names), f
    assert "meter_vision/infer/model.py" in names and "contract/payloads.py" in names
