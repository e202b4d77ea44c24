"""Helpers of the operators' page tests: screenshots for docs/operate-fleet.md, signing in."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from web_helpers import PASSWORD

REPO = Path(__file__).resolve().parents[2]
# Written to docs/img only when asked (METER_DOC_SCREENSHOTS=1), so a test run leaves the work tree as it
# was; kept small (256-colour PNG).
IMG = REPO / "docs" / "img" if os.environ.get("METER_DOC_SCREENSHOTS") == "1" else None


def shot(target: Any, name: str, tmp: Path, **kw: Any) -> None:
    """Screenshot a page or a locator into docs/img (when asked) or `tmp`."""
    from PIL import Image

    path = (IMG or tmp) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(path), **kw)
    with Image.open(path) as im:
        im.convert("RGB").quantize(256).save(path, optimize=True)
    assert path.stat().st_size > 1000


def sign_in(page: Any, base: str, login: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation():
        page.click("form.stack button[type=submit]")
