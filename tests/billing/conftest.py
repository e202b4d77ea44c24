"""Fixtures for the billing tests: a real sandbox over HTTP (uvicorn in a thread, free port)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_bridge.sandbox import SandboxServer


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxServer]:
    """An open sandbox (no auth, every well-formed account known)."""
    with SandboxServer(tmp_path / "sandbox.sqlite") as server:
        yield server
