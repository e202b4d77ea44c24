"""The installer's page: the current frame, proposed windows to drag, a test read, the starting value, Save.

Access is by a one-time PIN printed by `meter-edge setup` (and logged to the journal), over HTTPS with the
device's own certificate (edge/setup/tls.py); a signed session cookie keeps the installer in, valid for
this run only (the key is random per run). Five wrong PINs lock the page until setup is started again.
Every request body is small, typed JSON, refused past 64 KB.

The test read is the agent's own reading of a frame (`edge.pipeline.FramePipeline`: align to the
reference, crop, one model call, assemble) with the windows on the page, on the current frame and the
last few captured. Save writes the layout through `meter-edge calibrate`, then asks the running agent
to reload and to take the starting value (edge/agent/local.py), and says whether it confirmed.
"""

from __future__ import annotations

import base64
import hmac
import logging
import secrets
import tempfile
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import cv2
import numpy as np
import segno
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from contract.payloads import VALUE_PATTERN, SetValueCommand
from edge.capture.base import Frame
from edge.config import EdgeConfig
from meter_vision.geometry import rotate_image

log = logging.getLogger("edge.setup")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
MAX_BODY = 64 * 1024
MAX_PIN_FAILURES = 5
KEEP_FRAMES = 5  # the current frame and the ones captured before it, for the test read
CROP_HEIGHT = 96  # each window's crop is shown enlarged to about this height


class Box(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    x: int = Field(ge=0, le=8192)
    y: int = Field(ge=0, le=8192)
    w: int = Field(ge=4, le=2048)
    h: int = Field(ge=4, le=2048)


class Windows(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    rotation: float = Field(ge=-180, le=180)
    rois: list[Box] = Field(min_length=1, max_length=16)
    decimals: int = Field(0, ge=0, le=6)
    start_value: str | None = Field(None, pattern=VALUE_PATTERN)


class CaptureRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    led: bool = True


def binding_request(device_id: str) -> str:
    """What the operator needs to bind this device (the fields in capitals are theirs to fill in)."""
    return f'meter-bridge bind {device_id} --meter SERIAL --kind cold|hot --payer CODE --address "ADDRESS"'


def new_pin() -> str:
    return f"{secrets.randbelow(10**8):08d}"


class SetupState:
    """The frame on the page and what reads it; one installer at a time (a lock around the camera)."""

    def __init__(self, cfg: EdgeConfig, pin: str, pin_factory: Any = None) -> None:
        self.cfg = cfg
        self.pin = pin
        self.pin_factory = pin_factory
        self.failures = 0
        self.lock = threading.Lock()
        self.frames: deque[Frame] = deque(maxlen=KEEP_FRAMES)  # oldest first
        self._model: Any = None
        self.agent_timeout_s = 20.0

    def capture(self, led: bool = True) -> np.ndarray:
        """A new frame as the agent takes it; `led=False` leaves the flash LED off (to see what it changes)."""
        from edge.capture.cli import take_frame

        cfg = self.cfg if led else self.cfg.model_copy(update={"led": self.cfg.led.model_copy(update={"pin": 0})})
        with self.lock:
            frame = take_frame(cfg, self.pin_factory)
            self.frames.append(frame)
            return frame.image

    def current(self) -> np.ndarray:
        return self.frames[-1].image if self.frames else self.capture()

    def recent(self) -> list[Frame]:
        """The kept frames, oldest first, as one snapshot (a capture may append meanwhile)."""
        with self.lock:
            return list(self.frames)

    def model(self) -> Any:
        from meter_vision.infer import DigitModel

        if self._model is None:
            self._model = DigitModel(Path(self.cfg.model) if self.cfg.model else None)
        return self._model


def _authed(request: Request) -> bool:
    return bool(request.session.get("ok"))


async def _body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None past `limit` bytes (read no further: a huge or endless body is cut off)."""
    if int(request.headers.get("content-length") or 0) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> Windows | JSONResponse:
    body = await _body(request)
    if body is None:
        return JSONResponse({"error": "request too large"}, status_code=413)
    try:
        return Windows.model_validate_json(body)
    except ValidationError as exc:
        return JSONResponse({"error": f"invalid windows: {exc.errors()[0]['msg']}"}, status_code=422)


def _png_data_uri(img: np.ndarray) -> str:
    _, png = cv2.imencode(".png", img)
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def _enlarged(crop: np.ndarray) -> np.ndarray:
    k = max(1, round(CROP_HEIGHT / max(1, crop.shape[0])))
    return cv2.resize(crop, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST) if k > 1 else crop


def _start_value_problem(win: Windows) -> str | None:
    """A starting value the meter cannot show with these windows (more decimals, more digits)."""
    if not win.start_value:
        return None
    whole, _, frac = win.start_value.partition(".")
    if len(frac) > win.decimals:
        return (f"the starting value {win.start_value} has {len(frac)} decimals, but {win.decimals} of the windows "
                "are after the point: set Decimals, or write the value as the meter shows it")
    if len(whole.lstrip("0")) > len(win.rois) - win.decimals:
        return (f"the starting value {win.start_value} has more digits before the point than the "
                f"{len(win.rois) - win.decimals} windows there")
    return None


def _test_read(state: SetupState, win: Windows) -> JSONResponse:
    """Read the current frame and the last few with the agent's own pipeline and these windows: the
    current frame is the reference (as Save would make it); each frame is read on its own, as the agent
    reads its first frame, so what one frame reads never depends on another."""
    from edge.calibrate import AlignError
    from edge.calibrate.align import Aligner, crop_rois
    from edge.calibrate.layout import AlignSettings, Layout
    from edge.pipeline import FramePipeline
    from edge.reading.model import ReadingState
    from edge.reading.payload import to_reading
    from edge.reading.rules import Rules
    from meter_vision.geometry import Roi

    state.current()  # the first frame, when none was captured yet
    frames = state.recent()
    reference = rotate_image(frames[-1].image, win.rotation)
    h, w = reference.shape[:2]
    if any(b.x + b.w > w or b.y + b.h > h for b in win.rois):
        return JSONResponse({"error": f"a window reaches past the {w}x{h} frame"}, status_code=422)
    rois = sorted(win.rois, key=lambda b: b.x + b.w / 2)
    if win.decimals > len(rois):
        return JSONResponse({"error": f"{win.decimals} decimals but only {len(rois)} windows"}, status_code=422)
    try:
        layout = Layout(reference_image=Path("setup-page-frame.png"), digits=[Roi(b.x, b.y, b.w, b.h) for b in rois],
                        decimals=win.decimals, alignment=AlignSettings(initial_rotation_deg=win.rotation))
        pipeline = FramePipeline(layout, Aligner(layout, reference=reference), state.model(),
                                 Rules.from_config(state.cfg.reading, win.decimals))
    except (ValueError, AlignError) as exc:
        return JSONResponse({"error": f"these windows cannot be read: {str(exc).splitlines()[0]}"}, status_code=422)
    out: list[dict[str, Any]] = []
    for age, frame in enumerate(reversed(frames)):
        result = pipeline.process(frame.image, frame.taken_at, ReadingState())
        try:
            reading = to_reading(result.decision, device_id=state.cfg.device_id, seq=0, taken_at=frame.taken_at,
                                 model=pipeline.model_id)
        except ValueError as exc:  # e.g. a frame time the contract refuses (a clock far off)
            out.append({"frame": "current" if age == 0 else f"{age} before", "taken_at": frame.taken_at.isoformat(),
                        "value": None, "status": "error", "reason": f"not a valid reading: {str(exc)[:200]}",
                        "confidence": 0.0, "align": result.explain.get("align"), "wheels": []})
            continue
        crops = crop_rois(result.aligned, layout) if result.aligned is not None else []
        wheels = [{"digit": d.v, "position": d.f, "confidence": d.p,
                   "crop": _png_data_uri(_enlarged(crops[i])) if i < len(crops) else None}
                  for i, d in enumerate(reading.digits)]
        out.append({"frame": "current" if age == 0 else f"{age} before", "taken_at": frame.taken_at.isoformat(),
                    "value": reading.value, "status": reading.status, "reason": reading.reason,
                    "confidence": round(reading.confidence, 3), "align": result.explain.get("align"),
                    "wheels": wheels})
    current = out[0]
    agree = sum(1 for f in out if f["value"] is not None and f["value"] == current["value"])
    return JSONResponse({"value": current["value"], "status": current["status"], "reason": current["reason"],
                         "frames": out, "agree": agree, "model": pipeline.model_id,
                         "start_value": current["value"]})


def create_app(state: SetupState, *, https: bool = True) -> Starlette:
    def need_auth(request: Request) -> Response | None:
        if not _authed(request):
            return JSONResponse({"error": "sign in with the setup PIN"}, status_code=401)
        return None

    async def index(request: Request) -> Response:
        if not _authed(request):
            return TEMPLATES.TemplateResponse(request, "login.html", {"error": None, "locked": False})
        bind = binding_request(state.cfg.device_id)
        return TEMPLATES.TemplateResponse(request, "setup.html", {
            "device_id": state.cfg.device_id, "layout": str(state.cfg.layout), "bind": bind,
            "bind_qr": Markup(segno.make(bind, error="m").svg_inline(scale=4, border=4)), "keep": KEEP_FRAMES})

    async def login(request: Request) -> Response:
        body = await _body(request, 1024)
        if body is None:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            pin = (parse_qs(body.decode("latin-1"), max_num_fields=4).get("pin") or [""])[0][:32]
        except ValueError:
            pin = ""
        if state.failures >= MAX_PIN_FAILURES:
            return TEMPLATES.TemplateResponse(request, "login.html", {"error": None, "locked": True}, status_code=403)
        if not hmac.compare_digest(pin.encode(), state.pin.encode()):
            state.failures += 1
            log.warning("setup page: wrong PIN from %s (%d of %d)", request.client.host if request.client else "?",
                        state.failures, MAX_PIN_FAILURES)
            locked = state.failures >= MAX_PIN_FAILURES
            return TEMPLATES.TemplateResponse(request, "login.html", {"error": "wrong PIN", "locked": locked},
                                              status_code=403)
        request.session["ok"] = True
        return RedirectResponse("/", status_code=303)

    async def frame_png(request: Request) -> Response:
        if (denied := need_auth(request)) is not None:
            return denied
        try:
            rotation = float(request.query_params.get("rotate", "0"))
        except ValueError:
            return JSONResponse({"error": "rotate must be a number"}, status_code=422)
        if not -180 <= rotation <= 180:
            return JSONResponse({"error": "rotate must be within -180..180"}, status_code=422)
        img = rotate_image(state.current(), rotation)
        _, png = cv2.imencode(".png", img)
        return Response(png.tobytes(), media_type="image/png", headers={"Cache-Control": "no-store"})

    async def capture(request: Request) -> Response:
        if (denied := need_auth(request)) is not None:
            return denied
        from contract.settings import ConfigError
        from edge.capture import CaptureError, EndOfFrames

        body = await _body(request, 1024)
        if body is None:
            return JSONResponse({"error": "request too large"}, status_code=413)
        try:
            led = CaptureRequest.model_validate_json(body or b"{}").led
        except ValidationError:
            return JSONResponse({"error": 'expected {"led": true|false}'}, status_code=422)
        try:
            img = state.capture(led)
        except (ConfigError, CaptureError, EndOfFrames) as exc:
            return JSONResponse({"error": f"capture failed: {exc}"}, status_code=503)
        return JSONResponse({"width": img.shape[1], "height": img.shape[0]})

    async def propose(request: Request) -> Response:
        if (denied := need_auth(request)) is not None:
            return denied
        from meter_vision.windows import NoCounterFound, propose_windows

        model = state.model()
        try:
            prop = propose_windows(state.current(), confidences=lambda c: [p.confidence for p in model.classify(c)])
        except NoCounterFound as exc:
            return JSONResponse({"error": f"{exc}: draw the windows by hand (Add window)"}, status_code=422)
        return JSONResponse({"rotation": prop.rotation_deg, "found": prop.found, "notes": prop.notes,
                             "rois": [{"x": r.x, "y": r.y, "w": r.w, "h": r.h} for r in prop.rows],
                             "confidences": prop.confidences})

    async def test_read(request: Request) -> Response:
        if (denied := need_auth(request)) is not None:
            return denied
        win = await _json(request)
        if isinstance(win, JSONResponse):
            return win
        return await run_in_threadpool(_test_read, state, win)

    async def save(request: Request) -> Response:
        if (denied := need_auth(request)) is not None:
            return denied
        win = await _json(request)
        if isinstance(win, JSONResponse):
            return win
        if (bad := _start_value_problem(win)) is not None:
            return JSONResponse({"error": bad}, status_code=422)
        import click

        from edge.agent import local
        from edge.calibrate.cli import calibrate

        rois = ";".join(f"{b.x},{b.y},{b.w},{b.h}" for b in win.rois)
        with tempfile.TemporaryDirectory() as tmp:
            frame = Path(tmp) / "frame.png"
            cv2.imwrite(str(frame), state.current())
            args = ["--image", str(frame), "--rois", rois, "--decimals", str(win.decimals),
                    "--out", str(state.cfg.layout)]
            if win.rotation:
                args += ["--rotate", f"{win.rotation:g}"]
            try:
                await run_in_threadpool(calibrate.main, args, standalone_mode=False)
            except click.ClickException as exc:
                return JSONResponse({"error": exc.format_message()}, status_code=422)
        log.info("setup page: layout saved to %s", state.cfg.layout)
        start = (SetValueCommand(value=win.start_value, at=datetime.now(UTC)) if win.start_value else None)
        req = local.LocalRequest(id=secrets.token_hex(8), reload=True, set_value=start)
        try:
            answer = await run_in_threadpool(local.tell_agent, state.cfg.state_dir, req, state.agent_timeout_s)
        except OSError as exc:
            return JSONResponse({"saved": str(state.cfg.layout), "agent": {
                "status": "failed", "detail": f"could not leave the request in state_dir {state.cfg.state_dir}: "
                                              f"{exc.strerror or exc}; restart the service (sudo systemctl restart "
                                              "meter-edge) and set the starting value with cmd/set-value"}})
        log.info("setup page: agent %s: %s", answer.status, answer.detail)
        ok = answer.status == "confirmed" and answer.result is not None and "refused" not in (
            answer.result.reload, answer.result.set_value)
        return JSONResponse({"saved": str(state.cfg.layout), "start_value": win.start_value,
                             "agent": {"status": answer.status, "ok": ok, "detail": answer.detail}})

    routes = [Route("/", index), Route("/login", login, methods=["POST"]), Route("/frame.png", frame_png),
              Route("/capture", capture, methods=["POST"]), Route("/propose", propose, methods=["POST"]),
              Route("/test", test_read, methods=["POST"]), Route("/save", save, methods=["POST"])]
    from contract.settings import ConfigError
    from edge.capture import CaptureError, EndOfFrames

    async def no_frame(request: Request, exc: Exception) -> Response:
        """Any page that needs the first frame when the camera gives none (busy with the agent, unplugged)."""
        log.warning("setup page: no frame from the camera: %s", exc)
        return JSONResponse({"error": f"no frame from the camera: {exc} (with the Pi camera, stop the service "
                                      "while setup runs), then Capture again"}, status_code=503)

    return Starlette(routes=routes, exception_handlers={ConfigError: no_frame, CaptureError: no_frame,
                                                         EndOfFrames: no_frame}, middleware=[
        Middleware(SessionMiddleware, secret_key=secrets.token_hex(32), session_cookie="meter_setup",
                   max_age=4 * 3600, same_site="strict", https_only=https)])
