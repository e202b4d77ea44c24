"""Fixtures of the agent's tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from agent_helpers import Collector


@pytest.fixture
def collector_factory() -> Iterator[Any]:
    made: list[Collector] = []

    def make(port: int, subs: list[str], **kw: Any) -> Collector:
        c = Collector(port, subs, **kw).start()
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
