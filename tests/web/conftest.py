"""Fixtures for the portal's tests: a seeded SQLite store, the portal on a free port, and a real
Chromium (Debian's `chromium` through Playwright), one per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_helpers import NOW, World, make_config, seed, serve

from cloud_bridge.config import BridgeConfig
from cloud_bridge.store import open_store


class Portal:
    def __init__(self, url: str, engine: Any, config: BridgeConfig, world: World) -> None:
        self.url, self.engine, self.config, self.world = url, engine, config, world


@pytest.fixture
def portal_factory(tmp_path: Path) -> Iterator[Any]:
    """portal_factory(**web settings) → a Portal on a seeded store, clock fixed at NOW."""
    stack: list[Any] = []

    def make(billing_url: str = "http://127.0.0.1:9", **web: Any) -> Portal:
        url = f"sqlite:///{tmp_path / 'bridge.db'}"
        engine = open_store(url)
        world = seed(engine)
        config = make_config(url, tmp_path, billing_url, **web)
        ctx = serve(engine, config, clock=lambda: NOW)
        base = ctx.__enter__()
        stack.append((ctx, engine))
        return Portal(base, engine, config, world)

    yield make
    for ctx, engine in stack:
        ctx.__exit__(None, None, None)
        engine.dispose()


@pytest.fixture
def portal(portal_factory: Any) -> Portal:
    return portal_factory()  # type: ignore[no-any-return]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 375, "height": 740}, locale="ru-RU")
    p = context.new_page()
    try:
        yield p
    finally:
        context.close()
