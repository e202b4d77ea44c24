"""The device-side model: one invoke per batch, same answers in any batch size, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from infer_helpers import synthetic_crop

from meter_vision.infer import DigitModel, InferenceError, bundled_model_path
from meter_vision.infer.backends import BackendUnavailable, create_interpreter
from meter_vision.infer.backends.litert import LiteRTBackend
from meter_vision.infer.backends.tflite_runtime import TFLiteRuntimeBackend
from meter_vision.infer.decode import decode_positions, position_to_reading
from meter_vision.infer.preprocess import decode_image


def test_bundled_model_and_sidecar_exist() -> None:
    path = bundled_model_path()
    assert path.is_file() and path.with_suffix(".json").is_file()
    # the device's budget (issue 12: "up to ~1 MB int8 is fine"); v3 is two networks, 352 KB
    assert path.stat().st_size <= 1_000_000


def test_batch_and_single_calls_agree(digits_root: Path, val_rows: list[dict[str, str]]) -> None:
    model = DigitModel()
    crops = [decode_image((digits_root / r["file"]).read_bytes()) for r in val_rows[:24]]
    batched = model.classify(crops)
    singles = [model.classify([c])[0] for c in crops]
    again = model.classify(crops[:8]) + model.classify(crops[8:])
    assert [p.digit for p in batched] == [p.digit for p in singles] == [p.digit for p in again]
    assert [p.value for p in batched] == [p.value for p in singles] == [p.value for p in again]
    np.testing.assert_allclose([p.confidence for p in batched], [p.confidence for p in singles], atol=1e-6)


class CountingInterpreter:
    """Wraps a real interpreter and counts invokes and re-allocations."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.invokes = 0
        self.resizes = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def invoke(self) -> None:
        self.invokes += 1
        self.inner.invoke()  # type: ignore[attr-defined]

    def resize_tensor_input(self, *args: object, **kwargs: object) -> None:
        self.resizes += 1
        self.inner.resize_tensor_input(*args, **kwargs)  # type: ignore[attr-defined]


def test_one_invoke_per_frame_and_resize_only_on_a_new_batch_size() -> None:
    model = DigitModel()
    counter = CountingInterpreter(model._interp)
    model._interp = counter  # type: ignore[assignment]
    crops = [synthetic_crop(i) for i in range(8)]
    for _ in range(3):
        assert len(model.classify(crops)) == 8
    assert counter.invokes == 3 and counter.resizes == 1
    model.classify(crops[:5])
    assert counter.invokes == 4 and counter.resizes == 2
    assert model.classify([]) == []


def test_crops_of_any_size_and_grayscale() -> None:
    model = DigitModel()
    crops = [synthetic_crop(3, (15, 29)), synthetic_crop(3, (135, 211)), synthetic_crop(3)[:, :, 0]]
    preds = model.classify(crops)
    assert len(preds) == 3
    for p in preds:
        assert 0.0 <= p.value < 10.0 and 0.0 <= p.confidence <= 1.0


def test_no_runtime_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(self: object) -> object:
        raise BackendUnavailable("not installed (test)")

    monkeypatch.setattr(LiteRTBackend, "interpreter_class", unavailable)
    monkeypatch.setattr(TFLiteRuntimeBackend, "interpreter_class", unavailable)
    with pytest.raises(InferenceError) as err:
        create_interpreter(bundled_model_path())
    assert "ai_edge_litert" in str(err.value) and "tflite_runtime" in str(err.value)


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InferenceError, match="missing"):
        DigitModel(tmp_path / "digits.tflite")


def one_hot(*classes: int, n: int = 100) -> np.ndarray:
    p = np.zeros((1, n))
    for c in classes:
        p[0, c] = 1.0 / len(classes)
    return p


@pytest.mark.parametrize(
    ("probs", "value", "digit"),
    [
        (one_hot(37), 3.7, 3),
        (one_hot(0), 0.0, 0),
        (one_hot(99), 9.9, 9),
        (one_hot(39, 40), 4.0, 4),  # between two tenths: rounds to one of them, never outside
        (one_hot(99, 0), 0.0, 0),  # wraps around the circle, not to 5.0
    ],
)
def test_decode_on_a_circle(probs: np.ndarray, value: float, digit: int) -> None:
    pos, conf = decode_positions(probs)
    assert position_to_reading(float(pos[0])) == (value, digit)
    assert conf[0] == pytest.approx(1.0)


def test_spread_probability_means_low_confidence() -> None:
    flat = np.full((1, 100), 0.01)
    _, conf = decode_positions(flat)
    assert conf[0] == pytest.approx(0.05)


def test_empty_crop_is_a_clear_error() -> None:
    model = DigitModel()
    with pytest.raises(ValueError, match="crop 1 is empty"):
        model.classify([synthetic_crop(1), np.zeros((0, 5, 3), np.uint8)])


def test_a_sidecar_that_asks_for_per_window_normalisation_gets_it(tmp_path: Path) -> None:
    """The bundled v3 normalises each window before quantizing (its sidecar says so); the same file
    with that entry removed is fed raw pixels and reads differently, and a malformed entry is refused."""
    import json
    import shutil

    from meter_vision.infer.preprocess import normalize_windows

    src = bundled_model_path()
    side = json.loads(src.with_suffix(".json").read_text())
    norm = side["input"]["normalize"]
    assert norm["kind"] == "per_window" and norm["epsilon"] > 0
    crops = [synthetic_crop(i) for i in range(6)]
    model = DigitModel()
    x = model.prepare(crops)
    y = normalize_windows(x, norm["epsilon"])
    assert np.allclose(y.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    assert np.all(np.abs(y.std(axis=(1, 2, 3)) - 1) < 0.05)

    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    shutil.copy(src, raw_dir / "digits.tflite")
    del side["input"]["normalize"]
    (raw_dir / "digits.json").write_text(json.dumps(side))
    assert not np.allclose(DigitModel(raw_dir / "digits.tflite").probabilities(x), model.probabilities(x), atol=0.05)

    side["input"]["normalize"] = {"kind": "per_image_somehow"}
    (raw_dir / "digits.json").write_text(json.dumps(side))
    with pytest.raises(InferenceError, match=r"input\.normalize"):
        DigitModel(raw_dir / "digits.tflite")
