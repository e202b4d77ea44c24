"""`meter-edge setup`: the PIN, the API's refusals, and the page in a real Chromium at a phone's and a
laptop's size: propose, drag a window, test-read and save, on the simulator camera."""

from __future__ import annotations

import socket
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import uvicorn
from starlette.testclient import TestClient

from edge.config import EdgeConfig
from edge.setup.app import MAX_PIN_FAILURES, SetupState, create_app

PIN = "12345678"


def config(tmp_path: Path) -> EdgeConfig:
    return EdgeConfig(device_id="flat-12-cold", state_dir=tmp_path / "state", layout=tmp_path / "etc" / "layout.toml",
                      capture={"backend": "simulator", "source": "4"})  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(SetupState(config(tmp_path), PIN))) as c:
        yield c


def test_everything_needs_the_pin_and_wrong_pins_lock_the_page(client: TestClient) -> None:
    assert "Enter the PIN" in client.get("/").text
    assert client.get("/frame.png").status_code == 401
    assert client.post("/propose").status_code == 401
    assert client.post("/save", content=b"{}").status_code == 401
    for _ in range(MAX_PIN_FAILURES - 1):
        assert client.post("/login", data={"pin": "00000000"}).status_code == 403
    assert client.post("/login", data={"pin": PIN}, follow_redirects=False).status_code == 303
    page = client.get("/").text
    assert "Propose windows" in page and "meter-bridge bind flat-12-cold --meter SERIAL" in page
    assert "<svg" in page  # the binding request as a QR code
    assert client.get("/frame.png").headers["content-type"] == "image/png"


def test_locked_after_five_wrong_pins(tmp_path: Path) -> None:
    with TestClient(create_app(SetupState(config(tmp_path), PIN))) as c:
        for _ in range(MAX_PIN_FAILURES):
            c.post("/login", data={"pin": "99999999"})
        r = c.post("/login", data={"pin": PIN})
        assert r.status_code == 403 and "Too many wrong PINs" in r.text
        assert c.get("/frame.png").status_code == 401


def test_windows_are_strict_json(client: TestClient) -> None:
    client.post("/login", data={"pin": PIN})
    assert client.post("/test", content=b"x" * 70_000).status_code == 413
    bad = client.post("/test", content=b'{"rotation": 0, "rois": [{"x": "1", "y": 1, "w": 9, "h": 9}]}')
    assert bad.status_code == 422 and "invalid windows" in bad.json()["error"]
    outside = client.post("/test", json={"rotation": 0, "rois": [{"x": 630, "y": 1, "w": 40, "h": 40}]})
    assert outside.status_code == 422 and "reaches past" in outside.json()["error"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, EdgeConfig]]:
    cfg = config(tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(SetupState(cfg, PIN)), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", cfg
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

@pytest.mark.parametrize("size", [{"width": 390, "height": 844}, {"width": 1280, "height": 800}],
                         ids=["phone", "laptop"])
def test_propose_drag_test_and_save_in_a_browser(browser: Any, served: tuple[str, EdgeConfig],
                                                 size: dict[str, int]) -> None:
    url, cfg = served
    page = browser.new_page(viewport=size, has_touch=size["width"] < 500)
    try:
        page.goto(url)
        page.fill("input[name=pin]", PIN)
        with page.expect_navigation():
            page.click("button[type=submit]")
        page.wait_for_load_state("load")  # a screenshot taken mid-layout decodes as nothing
        qr = cv2.imdecode(np.frombuffer(page.locator("#bind-qr svg").screenshot(), np.uint8), cv2.IMREAD_COLOR)
        qr = cv2.resize(cv2.copyMakeBorder(qr, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=(255, 255, 255)), None,
                        fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
        text, _, _ = cv2.QRCodeDetector().detectAndDecode(qr)
        assert text == page.locator("#bind").inner_text().strip()
        assert text.startswith("meter-bridge bind flat-12-cold ")
        page.click("#propose")
        page.wait_for_selector(".box", timeout=60_000)
        assert page.locator(".box").count() == 8
        page.fill("#decimals", "3")
        page.dispatch_event("#decimals", "change")
        box = page.locator(".box").first.bounding_box()
        scale = page.evaluate("document.getElementById('frame').clientWidth / "
                              "document.getElementById('frame').naturalWidth")
        # drag window 1 right by 6 frame pixels, then back (a real drag with the mouse, both ways)
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 6 * scale, y, steps=4)
        page.mouse.up()
        moved = page.evaluate("rois[0].x")
        page.mouse.move(x + 6 * scale, y)
        page.mouse.down()
        page.mouse.move(x, y, steps=4)
        page.mouse.up()
        assert page.evaluate("rois[0].x") == moved - 6
        page.click("#test")
        page.wait_for_function("document.getElementById('msg').textContent.startsWith('the model reads')",
                               timeout=30_000)
        assert page.locator("#reads tbody tr").count() == 8
        page.click("#save")
        page.wait_for_function("document.getElementById('msg').textContent.startsWith('saved')", timeout=60_000)
        layout = tomllib.loads(cfg.layout.read_text())
        assert len(layout["digits"]) == 8 and layout["decimals"] == 3
        assert layout["digits"][0]["x"] == moved - 6
        assert cfg.layout.with_suffix(".png").is_file()
    finally:
        page.close()


def test_capture_with_the_led_and_without(tmp_path: Path) -> None:
    from gpiozero.pins.mock import MockFactory

    cfg = EdgeConfig(device_id="flat-12-cold", state_dir=tmp_path / "state", layout=tmp_path / "layout.toml",
                     led={"pin": 17, "warmup_s": 0.0})  # type: ignore[arg-type]
    factory = MockFactory()
    with TestClient(create_app(SetupState(cfg, PIN, pin_factory=factory))) as c:
        c.post("/login", data={"pin": PIN})
        assert c.post("/capture", json={"led": True}).json() == {"width": 640, "height": 480}
        factory.pin(17).assert_states([False, True, False])
        assert c.post("/capture", json={"led": False}).status_code == 200
        factory.pin(17).assert_states([False, True, False])  # not lit again
        assert c.post("/capture", json={"led": "yes"}).status_code == 422
