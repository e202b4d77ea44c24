"""The training pipeline runs and exports a model the device code loads (1 epoch, tiny sample)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from meter_vision.infer import DigitModel

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="TensorFlow is not installed (pip install -e .[train]); training not tested here")
def test_train_one_epoch_and_load(tmp_path: Path, digits_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from training.train import main

    monkeypatch.setenv("METER_SHARED_DIR", str(digits_root.parents[1]))
    out = tmp_path / "model"
    assert main(["--out", str(out), "--epochs", "1", "--limit", "400", "--val-limit", "40", "--sim", "0"]) == 0
    sidecar = json.loads((out / "digits.json").read_text())
    assert sidecar["output"]["classes"] == 100 and sidecar["training"]["train_crops"] == 400
    model = DigitModel(out / "digits.tflite")
    assert model.spec.width == 20 and model.spec.height == 32
    from infer_helpers import synthetic_crop

    assert len(model.classify([synthetic_crop(i) for i in range(5)])) == 5
