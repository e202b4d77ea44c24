"""Fixtures for the calibration tests: the shared real-photo folders."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def demo_dir(shared_data: Path) -> Path:
    return shared_data / "frames" / "ai-on-the-edge-demo"


@pytest.fixture(scope="module")
def default_dir(shared_data: Path) -> Path:
    return shared_data / "frames" / "ai-on-the-edge-default-config"
