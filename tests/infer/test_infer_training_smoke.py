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


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                    reason="TensorFlow is not installed (pip install -e .[train]); training not tested here")
def test_an_ensemble_is_one_int8_model_whose_logits_are_its_members_mean(tmp_path: Path) -> None:
    """Two networks (contrast layer included) averaged in one model: exported for the device (the
    contrast step moved to the device's float preprocessing), the int8 file reads through the device
    code in one call and says what the float average says."""
    import keras
    import numpy as np

    from meter_vision.infer.decode import decode_positions
    from meter_vision.infer.preprocess import normalize_windows
    from training.export import to_int8_tflite, write_model
    from training.model import build_model, ensemble, for_device, logits_model, with_temperature
    from training.recipe import RECIPES

    keras.utils.set_random_seed(3)
    members = [build_model(normalize=True), build_model(normalize=True)]
    # member 1 leans to wheel 3.0, member 2 to 7.0, both somewhat to 5.0: only their mean says 5.0
    for m, top in zip(members, (30, 70), strict=True):
        bias = np.zeros(100, np.float32)
        bias[top], bias[50] = 12.0, 8.0
        m.get_layer("logits").bias.assign(bias)
    both = ensemble(members)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (64, 32, 20, 3)).astype(np.float32)
    mean_logits = np.mean([logits_model(m).predict(x, verbose=0) for m in members], axis=0)
    np.testing.assert_allclose(logits_model(both).predict(x, verbose=0), mean_logits, rtol=1e-4, atol=1e-4)

    # the device form: the same layers after the contrast step, fed windows normalised in numpy
    device, normalize = for_device(both, 0.9)
    assert normalize is not None and not any(lyr.name == "contrast" for lyr in device.layers)
    xn = normalize_windows(x, normalize["epsilon"])
    in_graph = keras.ops.convert_to_numpy(with_temperature(both, 0.9).predict(x, verbose=0))
    np.testing.assert_allclose(device.predict(xn, verbose=0), in_graph, rtol=1e-3, atol=1e-5)
    # an untrained network's output depends on the pixels only: the two forms agree on it too
    plain = build_model(normalize=True)
    plain_device, _ = for_device(plain, 1.0)
    np.testing.assert_allclose(plain_device.predict(xn, verbose=0), with_temperature(plain, 1.0).predict(x, verbose=0),
                               rtol=1e-3, atol=0)

    path = write_model(tmp_path, to_int8_tflite(device, xn),
                       {"schema": 1, "model_id": "ensemble-test",
                        "input": {"width": 20, "height": 32, "color": "RGB", "normalize": normalize},
                        "output": {"classes": 100, "kind": "probabilities"},
                        "decode": {"window": 2, "confidence_threshold": 0.5}})
    dm = DigitModel(path)
    got = dm.probabilities(x[:8].astype(np.uint8).astype(np.float32))
    want = keras.ops.convert_to_numpy(keras.ops.softmax(mean_logits[:8] / 0.9))
    assert got.shape == (8, 100)
    assert np.abs(got - want).max() < 0.05  # int8: probabilities to about 1/256, activations to a few %
    assert set(np.argmax(got, axis=1)) == {50} and set(np.argmax(want, axis=1)) == {50}
    assert np.allclose(decode_positions(got)[0], 50, atol=1)

    # an ensemble recipe passes overrides (a one-epoch smoke run) to every member
    smoke = RECIPES["v3e"].replace(epochs=1, sim=0, sim_misplaced=0)
    assert [(m.epochs, m.sim, m.sim_misplaced) for m in smoke.members] == [(1, 0, 0), (1, 0, 0)]
    assert [m.seed for m in smoke.members] == [RECIPES["v2nb"].seed, RECIPES["v2nb-s2"].seed]
    # a new seed (train --seed) keeps the members apart: the same seed twice would be one network twice
    reseeded = RECIPES["v3e"].replace(seed=7)
    assert [m.seed for m in reseeded.members] == [7, 7 + RECIPES["v2nb-s2"].seed - RECIPES["v2nb"].seed]
