"""Screenshots of the residents' portal for docs/residents.md, on a phone-sized Chromium:

    PYTHONPATH=. .venv/bin/python tests/web/make_screenshots.py docs/img

Same seeded store and fixed clock as the tests (web_helpers), a billing sandbox for the correction."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from PIL import Image
from playwright.sync_api import sync_playwright
from web_helpers import ALICE, NOW, PASSWORD, make_config, seed, serve

from cloud_bridge.sandbox import SandboxServer
from cloud_bridge.store import open_store

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def shrink(path: Path, height: int) -> None:
    """Crop to the top `height` CSS pixels and keep 64 colours: a small PNG that still reads well."""
    im = Image.open(path).convert("RGB")
    im = im.crop((0, 0, im.width, min(im.height, height)))
    im.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="portal-shots-"))
    url = f"sqlite:///{tmp / 'bridge.db'}"
    engine = open_store(url)
    world = seed(engine)
    with SandboxServer(tmp / "sandbox.sqlite") as billing, \
            serve(engine, make_config(url, tmp, billing.url), clock=lambda: NOW) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=ARGS)
        page = browser.new_page(viewport={"width": 375, "height": 740}, device_scale_factor=1)

        def shot(name: str, height: int = 740, full: bool = False) -> None:
            path = out / f"portal-{name}.png"
            page.screenshot(path=str(path), full_page=full)
            shrink(path, height)

        page.goto(base + "/login")
        shot("login", 520)
        page.fill("input[name=login]", world.alice)
        page.fill("input[name=password]", PASSWORD)
        page.click("form.stack button[type=submit]")
        page.wait_for_url("**/me")
        shot("me", 900, full=True)
        page.goto(f"{base}/payer/{ALICE}")
        shot("payer", 1500, full=True)
        reading = world.reading_ids["dev-a-cold"][-2]
        page.goto(f"{base}/payer/{ALICE}/reading/{reading}")
        page.fill("input[name=value]", "00135.010")
        page.click("form.stack button[type=submit]")
        page.wait_for_selector("#outcome")
        shot("correction", 1100, full=True)
        page.goto(f"{base}/payer/{ALICE}/reading/{reading}")
        page.fill("input[name=value]", "00099.000")
        page.click("form.stack button[type=submit]")
        page.wait_for_selector("#outcome")
        shot("correction-refused", 700, full=True)
        page.goto(base + "/me/notifications")
        shot("notifications", 700, full=True)
        page.click("button[name=lang][value=en]")
        page.goto(f"{base}/payer/{ALICE}")
        shot("payer-en", 1000, full=True)
        browser.close()
    engine.dispose()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img"))
