"""The installer's page: the current frame, proposed windows to drag, a test read, and Save.

Access is by a one-time PIN printed by `meter-edge setup` (and logged to the journal); a signed session
cookie keeps the installer in, valid for this run only (the key is random per run). Five wrong PINs lock
the page until setup is started again. Every request body is small, typed JSON, refused past 64 KB.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import segno
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from edge.config import EdgeConfig
from meter_vision.geometry import rotate_image

log = logging.getLogger("edge.setup")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
MAX_BODY = 64 * 1024
MAX_PIN_FAILURES = 5


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
    decimals: int = Field(0, ge=0, le=8)


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
        self.frame: np.ndarray | None = None
        self._model: Any = None

    def capture(self, led: bool = True) -> np.ndarray:
        """A new frame as the agent takes it; `led=False` leaves the flash LED off (to see what it changes)."""
        from edge.capture.cli import take_frame

        cfg = self.cfg if led else self.cfg.model_copy(update={"led": self.cfg.led.model_copy(update={"pin": 0})})
        with self.lock:
            self.frame = take_frame(cfg, self.pin_factory).image
            return self.frame

    def current(self) -> np.ndarray:
        return self.frame if self.frame is not None else self.capture()

    def model(self) -> Any:
        from meter_vision.infer import DigitModel

        if self._model is None:
            self._model = DigitModel(Path(self.cfg.model) if self.cfg.model else None)
        return self._model


def _authed(request: Request) -> bool:
    return bool(request.session.get("ok"))


async def _json(request: Request) -> Windows | JSONResponse:
    body = await request.body()
    if len(body) > MAX_BODY:
        return JSONResponse({"error": "request too large"}, status_code=413)
    try:
        return Windows.model_validate_json(body)
    except ValidationError as exc:
        return JSONResponse({"error": f"invalid windows: {exc.errors()[0]['msg']}"}, status_code=422)


def create_app(state: SetupState) -> Starlette:
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
            "bind_qr": Markup(segno.make(bind, error="m").svg_inline(scale=4, border=4))})

    async def login(request: Request) -> Response:
        form = await request.form()
        pin = str(form.get("pin", ""))[:32]
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

        body = await request.body()
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
        img = rotate_image(state.current(), win.rotation)
        h, w = img.shape[:2]
        if any(b.x + b.w > w or b.y + b.h > h for b in win.rois):
            return JSONResponse({"error": f"a window reaches past the {w}x{h} frame"}, status_code=422)
        rois = sorted(win.rois, key=lambda b: b.x + b.w / 2)
        preds = state.model().classify([img[b.y:b.y + b.h, b.x:b.x + b.w] for b in rois])
        digits = "".join("N" if p.digit is None else str(p.digit) for p in preds)
        if win.decimals:
            digits = digits[: len(digits) - win.decimals] + "." + digits[len(digits) - win.decimals:]
        return JSONResponse({"value": digits, "digits": [
            {"digit": p.digit, "position": round(p.value, 1), "confidence": round(p.confidence, 3)} for p in preds]})

    async def save(request: Request) -> Response:
        if (denied := need_auth(request)) is not None:
            return denied
        win = await _json(request)
        if isinstance(win, JSONResponse):
            return win
        import click

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
                calibrate.main(args, standalone_mode=False)
            except click.ClickException as exc:
                return JSONResponse({"error": exc.format_message()}, status_code=422)
        log.info("setup page: layout saved to %s", state.cfg.layout)
        return JSONResponse({"saved": str(state.cfg.layout)})

    routes = [Route("/", index), Route("/login", login, methods=["POST"]), Route("/frame.png", frame_png),
              Route("/capture", capture, methods=["POST"]), Route("/propose", propose, methods=["POST"]),
              Route("/test", test_read, methods=["POST"]), Route("/save", save, methods=["POST"])]
    return Starlette(routes=routes, middleware=[
        Middleware(SessionMiddleware, secret_key=secrets.token_hex(32), session_cookie="meter_setup",
                   max_age=4 * 3600, same_site="strict", https_only=False)])
