"""`meter-edge setup`: the PIN, the API's refusals, the test read through the agent's pipeline, the
starting value, Save answered by a real running agent, HTTPS with the device's own certificate, and the
page in a real Chromium at a phone's and a laptop's size: propose, drag a window, test-read and save, on
the simulator camera. METER_DOC_SCREENSHOTS=1 writes the screenshots of docs/calibrate.md into docs/img."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import uvicorn
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "agent"))
from agent_helpers import reading_state_previous, stop_agent

from edge.agent import local
from edge.config import EdgeConfig, load_edge_config
from edge.setup.app import MAX_PIN_FAILURES, SetupState, create_app
from edge.setup.tls import ensure_certificate

PIN = "12345678"
REPO = Path(__file__).resolve().parents[2]
IMG = REPO / "docs" / "img" if os.environ.get("METER_DOC_SCREENSHOTS") == "1" else None
HTTPS = "https://testserver"  # the session cookie is Secure: sent over HTTPS only


def config(tmp_path: Path) -> EdgeConfig:
    return EdgeConfig(device_id="flat-12-cold", state_dir=tmp_path / "state", layout=tmp_path / "etc" / "layout.toml",
                      capture={"backend": "simulator", "source": "4", "sim_faults": "none"})  # type: ignore[arg-type]


def edge_toml(tmp_path: Path, port: int) -> Path:
    """The device's config, shared by the setup page and the agent process (as on a Pi)."""
    import tomli_w

    path = tmp_path / "edge.toml"
    path.write_text(tomli_w.dumps({
        "device_id": "flat-12-cold", "state_dir": str(tmp_path / "state"), "interval_s": 3600,
        "telemetry_interval_s": 60, "layout": str(tmp_path / "etc" / "layout.toml"),
        "capture": {"backend": "simulator", "source": "4", "sim_faults": "none"},
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 1, "reconnect_max_s": 1}}))
    return path


def start_agent(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def wait_agent(state_dir: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while local.running_agent(state_dir) != proc.pid:
        assert proc.poll() is None, f"agent exited with {proc.returncode}: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "agent did not start"
        time.sleep(0.05)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(SetupState(config(tmp_path), PIN)), base_url=HTTPS) as c:
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


def test_the_pin_form_is_small(client: TestClient) -> None:
    assert client.post("/login", content=b"pin=" + b"1" * 5000,
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    assert client.post("/login", content=iter([b"pin=", b"1" * 2000]),
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    many = "&".join(f"f{i}=1" for i in range(10)) + f"&pin={PIN}"
    assert client.post("/login", content=many.encode(),
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 403
    assert client.post("/login", data={"pin": PIN}, follow_redirects=False).status_code == 303


def test_locked_after_five_wrong_pins(tmp_path: Path) -> None:
    with TestClient(create_app(SetupState(config(tmp_path), PIN)), base_url=HTTPS) as c:
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
    # no Content-Length (chunked): cut off past the limit all the same, before anything is parsed
    assert client.post("/test", content=iter([b"{" + b" " * 65_536] * 4)).status_code == 413
    assert client.post("/capture", content=b"x" * 2000).status_code == 413
    outside = client.post("/test", json={"rotation": 0, "rois": [{"x": 630, "y": 1, "w": 40, "h": 40}]})
    assert outside.status_code == 422 and "reaches past" in outside.json()["error"]


def test_the_test_read_is_the_agents_pipeline_on_the_current_and_last_frames(client: TestClient) -> None:
    client.post("/login", data={"pin": PIN})
    assert client.post("/capture", json={"led": True}).status_code == 200
    assert client.post("/capture", json={"led": True}).status_code == 200
    assert client.post("/capture", json={"led": True}).status_code == 200
    prop = client.post("/propose").json()
    t = client.post("/test", json={"rotation": prop["rotation"], "rois": prop["rois"], "decimals": 3}).json()
    assert [f["frame"] for f in t["frames"]] == ["current", "1 before", "2 before"]
    for f in t["frames"]:
        assert f["status"] == "ok", f
        assert f["align"]["ok"] and f["value"].startswith("0012") and len(f["value"]) == 9
        assert len(f["wheels"]) == 8
        assert all(w["crop"].startswith("data:image/png;base64,") and w["confidence"] > 0.5 for w in f["wheels"])
        assert "".join(str(w["digit"]) for w in f["wheels"]) == f["value"].replace(".", "")
    assert t["value"] == t["frames"][0]["value"] and t["start_value"] == t["value"]
    values = [f["value"] for f in reversed(t["frames"])]
    assert values == sorted(values), "the simulated meter only moves forward"
    # A window off the counter reads nothing sure: the pipeline says so, as the agent would publish it.
    off = [dict(r, y=r["y"] + r["h"] + 40) if i == 2 else r for i, r in enumerate(prop["rois"])]
    bad = client.post("/test", json={"rotation": prop["rotation"], "rois": off, "decimals": 3}).json()
    assert bad["frames"][0]["status"] != "ok" or bad["frames"][0]["value"] != t["value"]


def test_save_refuses_a_starting_value_the_meter_cannot_show(client: TestClient) -> None:
    client.post("/login", data={"pin": PIN})
    prop = client.post("/propose").json()
    body = {"rotation": prop["rotation"], "rois": prop["rois"], "decimals": 3}
    for value, why in (("12.3456", "4 decimals"), ("123456.000", "more digits before the point"),
                       ("-1", "invalid windows"), ("1e3", "invalid windows")):
        r = client.post("/save", json={**body, "start_value": value})
        assert r.status_code == 422 and why in r.json()["error"], (value, r.text)


@pytest.mark.mosquitto
def test_save_is_confirmed_by_the_running_agent_with_the_starting_value(tmp_path: Path, broker: Any) -> None:
    conf = edge_toml(tmp_path, broker.port)
    cfg = load_edge_config(conf)
    state = SetupState(cfg, PIN)
    log = tmp_path / "agent.log"
    with TestClient(create_app(state), base_url=HTTPS) as c:
        c.post("/login", data={"pin": PIN})
        prop = c.post("/propose").json()
        body = {"rotation": prop["rotation"], "rois": prop["rois"], "decimals": 3}
        start = c.post("/test", json=body).json()["start_value"]
        # A new device: no agent runs yet (it needs a layout). The request waits for it.
        r = c.post("/save", json={**body, "start_value": start}).json()
        assert r["agent"]["status"] == "pending" and not r["agent"]["ok"] and "when it starts" in r["agent"]["detail"]
        proc = start_agent(conf, log)
        try:
            wait_agent(cfg.state_dir, proc, log)
            deadline = time.monotonic() + 30
            while (cfg.state_dir / local.REQUEST_NAME).exists() or not (cfg.state_dir / local.RESULT_NAME).exists():
                assert time.monotonic() < deadline, "the agent did not take the request saved before it started"
                time.sleep(0.05)
            assert reading_state_previous(cfg.state_dir) == str(Decimal(start))
            # Adjust and save again with the agent running: it reloads and takes the installer's value.
            r = c.post("/save", json={**body, "start_value": "00130.5"}).json()
            assert r["agent"]["status"] == "confirmed" and r["agent"]["ok"], r
            assert "reloaded the config and layout; set the starting value" in r["agent"]["detail"]
            assert reading_state_previous(cfg.state_dir) == "130.500"
            # A config the agent cannot load: the page does not call that confirmed, and says why.
            good = conf.read_text()
            conf.write_text(good.replace("interval_s = 3600", "interval_s = -1"))
            r = c.post("/save", json={**body, "start_value": "00131.000"}).json()
            assert r["agent"]["status"] == "confirmed" and not r["agent"]["ok"]
            assert "did NOT reload" in r["agent"]["detail"] and "interval_s" in r["agent"]["detail"]
            assert reading_state_previous(cfg.state_dir) == "130.500"
            conf.write_text(good)
        finally:
            stop_agent(proc)
    assert proc.returncode == 0, log.read_text()[-2000:]
    assert "setup page's request" in log.read_text()


def test_https_certificate_is_made_once_with_a_private_key(tmp_path: Path) -> None:
    first = ensure_certificate(tmp_path, "flat-12-cold", ["192.168.1.23"])
    assert first.created and first.key.stat().st_mode & 0o777 == 0o600
    again = ensure_certificate(tmp_path, "flat-12-cold", ["192.168.1.23"])
    assert not again.created and again.fingerprint == first.fingerprint
    assert len(first.fingerprint.split(":")) == 32
    first.key.chmod(0o644)  # a key others could read is not trusted: a new pair
    third = ensure_certificate(tmp_path, "flat-12-cold")
    assert third.created and third.fingerprint != first.fingerprint and third.key.stat().st_mode & 0o777 == 0o600


def test_insecure_http_only_on_loopback(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from edge.setup.cli import setup

    r = CliRunner().invoke(setup, ["--host", "0.0.0.0", "--insecure-http"])
    assert r.exit_code != 0 and "only with a loopback --host" in r.output


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, EdgeConfig, str]]:
    """The page over HTTPS with the device's own certificate, as `meter-edge setup` serves it."""
    cfg = config(tmp_path)
    cert = ensure_certificate(cfg.state_dir, cfg.device_id)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(SetupState(cfg, PIN)), log_level="warning", lifespan="off",
                                           ssl_keyfile=str(cert.key), ssl_certfile=str(cert.cert)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield f"https://127.0.0.1:{sock.getsockname()[1]}", cfg, cert.fingerprint
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_the_page_is_served_over_https_with_the_printed_fingerprint(served: tuple[str, EdgeConfig, str]) -> None:
    url, _, fingerprint = served
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(url + "/", context=ctx, timeout=10) as r:
        assert "Enter the PIN" in r.read().decode()
    host, port = url.removeprefix("https://").split(":")
    der = ssl.get_server_certificate((host, int(port)))
    from edge.setup.tls import fingerprint_of

    assert fingerprint_of(der.encode()) == fingerprint
    with pytest.raises(Exception):  # noqa: B017 - plain HTTP gets no page (the PIN never goes in clear)
        urllib.request.urlopen(url.replace("https://", "http://") + "/", timeout=10).read()


def shot(page: Any, name: str, tmp: Path, **kw: Any) -> None:
    from PIL import Image

    path = (IMG or tmp) / name
    page.screenshot(path=str(path), **kw)
    with Image.open(path) as im:
        im.convert("RGB").quantize(256).save(path, optimize=True)


@pytest.mark.mosquitto
@pytest.mark.parametrize("size", [{"width": 390, "height": 844}, {"width": 1280, "height": 800}],
                         ids=["phone", "laptop"])
def test_propose_drag_test_and_save_in_a_browser(browser: Any, served: tuple[str, EdgeConfig, str], broker: Any,
                                                 tmp_path: Path, size: dict[str, int]) -> None:
    url, cfg, _ = served
    phone = size["width"] < 500
    suffix = "phone" if phone else "laptop"
    # The service runs (with an earlier layout, as after a first Save): the page's Save must reach it.
    from click.testing import CliRunner

    from edge.calibrate.cli import calibrate
    from edge.capture.simulator import SIM_ROIS, render_reference

    ref = tmp_path / "reference-frame.png"
    cv2.imwrite(str(ref), render_reference())
    made = CliRunner().invoke(calibrate, ["--image", str(ref), "--rois", SIM_ROIS, "--decimals", "3",
                                          "--out", str(cfg.layout)])
    assert made.exit_code == 0, made.output
    conf = edge_toml(tmp_path, broker.port)
    log = tmp_path / "agent.log"
    proc = start_agent(conf, log)
    context = browser.new_context(viewport=size, has_touch=phone, ignore_https_errors=True,
                                  device_scale_factor=2 if phone else 1)
    page = context.new_page()
    try:
        wait_agent(cfg.state_dir, proc, log)
        page.goto(url)
        if IMG is not None and phone:
            shot(page, "setup-login-phone.png", tmp_path, clip={"x": 0, "y": 0, "width": 390, "height": 360})
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
        page.click("#capture")  # a second frame for the test read
        page.wait_for_function("document.getElementById('msg').textContent === 'new frame'", timeout=30_000)
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
        if IMG is not None and phone:
            shot(page, "setup-windows-phone.png", tmp_path)
        page.click("#test")
        page.wait_for_function("document.getElementById('msg').textContent.startsWith('the model reads')",
                               timeout=30_000)
        assert page.locator("#reads .frame").count() == 2
        assert page.locator("#reads .frame").first.locator(".wheel img").count() == 8
        current = page.locator("#reads .frame h3").first.inner_text()
        assert current.startswith("Current frame: 0012") and "— ok" in current
        start = page.input_value("#start")
        assert start and start in current, "the starting value is pre-filled with what the test read gives"
        if IMG is not None:
            page.locator("#reads").scroll_into_view_if_needed()
            shot(page, f"setup-test-read-{suffix}.png", tmp_path)
        page.click("#save")
        page.wait_for_function("document.getElementById('agent').textContent !== ''", timeout=60_000)
        assert page.locator("#msg").inner_text().startswith("saved")
        agent = page.locator("#agent").inner_text()
        assert agent.startswith("Agent confirmed: ") and "set the starting value" in agent, agent
        if IMG is not None and phone:
            page.locator("#agent").scroll_into_view_if_needed()
            shot(page, "setup-saved-phone.png", tmp_path)
        layout = tomllib.loads(cfg.layout.read_text())
        assert len(layout["digits"]) == 8 and layout["decimals"] == 3
        assert layout["digits"][0]["x"] == moved - 6
        assert cfg.layout.with_suffix(".png").is_file()
        assert reading_state_previous(cfg.state_dir) == str(Decimal(start))
    finally:
        context.close()
        stop_agent(proc)


def test_capture_with_the_led_and_without(tmp_path: Path) -> None:
    from gpiozero.pins.mock import MockFactory

    cfg = EdgeConfig(device_id="flat-12-cold", state_dir=tmp_path / "state", layout=tmp_path / "layout.toml",
                     led={"pin": 17, "warmup_s": 0.0})  # type: ignore[arg-type]
    factory = MockFactory()
    with TestClient(create_app(SetupState(cfg, PIN, pin_factory=factory)), base_url=HTTPS) as c:
        c.post("/login", data={"pin": PIN})
        assert c.post("/capture", json={"led": True}).json() == {"width": 640, "height": 480}
        factory.pin(17).assert_states([False, True, False])
        assert c.post("/capture", json={"led": False}).status_code == 200
        factory.pin(17).assert_states([False, True, False])  # not lit again
        assert c.post("/capture", json={"led": "yes"}).status_code == 422


def test_no_frame_from_the_camera_is_said_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    cfg = EdgeConfig(device_id="flat-12-cold", state_dir=tmp_path / "state", layout=tmp_path / "layout.toml",
                     capture={"backend": "folder", "source": str(tmp_path / "empty")})  # type: ignore[arg-type]
    with TestClient(create_app(SetupState(cfg, PIN)), base_url=HTTPS) as c:
        c.post("/login", data={"pin": PIN})
        for r in (c.get("/frame.png"), c.post("/propose"), c.post("/capture", json={"led": True})):
            assert r.status_code == 503, r.text
            assert "camera" in r.json()["error"] or "capture failed" in r.json()["error"]


def test_propose_and_test_read_on_real_photos(tmp_path: Path, shared_data: Path) -> None:
    """The AI-on-the-edge demo's last three photos through the folder camera: the page proposes the windows
    on the newest (tilted 34.6°), and the test read aligns all three to it and reads what their names say."""
    names = ["531.38301.jpg", "531.63071.jpg", "531.82235.jpg"]
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in names:
        (frames / name).symlink_to(shared_data / "frames" / "ai-on-the-edge-demo" / name)
    cfg = EdgeConfig(device_id="demo", state_dir=tmp_path / "state", layout=tmp_path / "layout.toml",
                     capture={"backend": "folder", "source": str(frames)})  # type: ignore[arg-type]
    with TestClient(create_app(SetupState(cfg, PIN)), base_url=HTTPS) as c:
        c.post("/login", data={"pin": PIN})
        for _ in names:
            assert c.post("/capture", json={"led": True}).status_code == 200
        prop = c.post("/propose").json()
        assert len(prop["rois"]) == 5 and abs(prop["rotation"] - -34.6) < 2
        t = c.post("/test", json={"rotation": prop["rotation"], "rois": prop["rois"], "decimals": 0}).json()
        assert t["value"] == "00531" and t["agree"] == 3 and t["start_value"] == "00531"
        for f, name in zip(t["frames"], reversed(names), strict=True):
            assert f["status"] == "ok" and f["align"]["ok"], f
            assert abs(f["wheels"][-1]["position"] - float(name[2:-4])) < 0.3, (name, f["wheels"][-1])


def test_meter_edge_setup_prints_the_pin_and_the_fingerprint_and_serves_https(tmp_path: Path) -> None:
    from edge.setup.tls import fingerprint_of

    conf = edge_toml(tmp_path, 1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "setup", "--config", str(conf), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, start_new_session=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        printed = "".join(lines)
        assert f"https://127.0.0.1:{port}/" in printed, printed
        pin = next(ln.split()[1] for ln in lines if ln.startswith("PIN: "))
        fingerprint = next(ln.split(": ", 1)[1].strip() for ln in lines if ln.startswith("certificate SHA-256: "))
        key = tmp_path / "state" / "setup-tls.key"
        assert key.stat().st_mode & 0o777 == 0o600
        deadline = time.monotonic() + 30
        while True:
            try:
                served = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert fingerprint_of(served.encode()) == fingerprint
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert f"PIN {pin}, certificate SHA-256 {fingerprint}" in err  # the journal's line (stderr under systemd)
