"""The digit network: a small CNN over RGB 20x32 with 100 output classes (wheel position 0.0–9.9).

Flatten, not global pooling, before the dense layers: where the digits sit vertically in the window
is what tells 3.2 from 3.7.
"""

from __future__ import annotations

from typing import Any

CONTRAST_EPSILON = (10.0 / 255.0) ** 2  # the contrast layer's epsilon (on the 0..1 scale)


def build_model(width: int = 20, height: int = 32, classes: int = 100, filters: tuple[int, ...] = (24, 48, 64),
                dense: int = 192, dropout: float = 0.3, double: tuple[int, ...] = (), normalize: bool = False) -> Any:
    """``double``: indices of the conv blocks that get a second 3x3 conv before pooling (more depth).

    ``normalize``: each window is brought to mean 0 and standard deviation 1 (over its pixels and
    colours) before the first convolution, so a pale digit on a dull drum reaches the network with
    the contrast of a crisp one. The variance gets (10 grey levels)² added first, so an empty, flat
    window is not blown up into its noise.
    """
    import keras
    from keras import layers

    inp = keras.Input(shape=(height, width, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0)(inp)
    if normalize:
        x = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, epsilon=CONTRAST_EPSILON,
                                      name="contrast")(x)
    for i, f in enumerate(filters):
        convs = 2 if i in double else 1
        for j in range(convs):
            suffix = "" if j == 0 else "b"
            x = layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"conv{i + 1}{suffix}")(x)
            x = layers.BatchNormalization(name=f"bn{i + 1}{suffix}")(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(dense, name="fc")(x)
    x = layers.BatchNormalization(name="bn_fc")(x)
    x = layers.ReLU()(x)
    x = layers.Dropout(dropout / 2)(x)
    logits = layers.Dense(classes, name="logits")(x)
    out = layers.Softmax(name="probs")(logits)
    return keras.Model(inp, out, name="digits_c100")


def logits_model(model: Any) -> Any:
    """The same network without its softmax (for out-of-fold logits and temperature fitting)."""
    import keras

    return keras.Model(model.input, model.get_layer("logits").output)


def with_temperature(model: Any, temperature: float) -> Any:
    """The trained network with its logits divided by ``temperature`` before the softmax, so the
    exported int8 model gives calibrated probabilities and the device code needs no change."""
    import keras
    from keras import layers

    logits = model.get_layer("logits").output
    scaled = layers.Rescaling(1.0 / float(temperature), name="temperature")(logits)
    return keras.Model(model.input, layers.Softmax(name="probs")(scaled), name=model.name)



def ensemble(models: list[Any], name: str = "digits_c100_ensemble") -> Any:
    """Several trained networks as one model: the same input, their logits averaged (a layer named
    ``logits``, so :func:`logits_model` and :func:`with_temperature` work on it), one softmax. The
    device runs it in one interpreter call like a single network."""
    import keras
    from keras import layers

    inp = keras.Input(shape=tuple(models[0].input_shape[1:]), name="image")
    outs = [keras.Model(m.input, m.get_layer("logits").output, name=f"member{i + 1}")(inp)
            for i, m in enumerate(models)]
    avg = layers.Average(name="logits")(outs)
    return keras.Model(inp, layers.Softmax(name="probs")(avg), name=name)


def for_device(model: Any, temperature: float) -> tuple[Any, dict[str, Any] | None]:
    """The model to export, and the sidecar's ``input.normalize`` entry (None: plain 0..255 pixels).

    A network with a ``contrast`` layer is exported without it: the same layers after it, reused with
    their weights, take the already normalised window, and the device normalises each window in float
    (``meter_vision.infer.preprocess.normalize_windows``) before quantizing. In int8 that layer's four
    ops (MEAN, SQUARED_DIFFERENCE, RSQRT, MUL) cost as much as half a network, once per member of an
    ensemble. The members' logits are averaged as in :func:`ensemble`, then divided by
    ``temperature`` before the softmax.
    """
    import keras
    from keras import layers

    members = [lyr for lyr in model.layers if lyr.name.startswith("member")] or [model]
    names = [[lyr.name for lyr in m.layers] for m in members]
    if not all("contrast" in n for n in names):
        if any("contrast" in n for n in names):
            raise ValueError("an ensemble mixes networks with and without the contrast layer")
        return with_temperature(model, temperature), None
    inp = keras.Input(shape=tuple(model.input_shape[1:]), name="window")
    outs = []
    for i, (m, n) in enumerate(zip(members, names, strict=True)):
        sub_in = keras.Input(shape=tuple(model.input_shape[1:]), name=f"normalised{i + 1}")
        x = sub_in
        for lyr in m.layers[n.index("contrast") + 1: n.index("logits") + 1]:
            x = lyr(x)  # the trained layer itself: its weights, not a copy
        outs.append(keras.Model(sub_in, x, name=f"net{i + 1}")(inp))
    logits = layers.Average(name="logits_mean")(outs) if len(outs) > 1 else outs[0]
    scaled = layers.Rescaling(1.0 / float(temperature), name="temperature")(logits)
    out = keras.Model(inp, layers.Softmax(name="probs")(scaled), name=f"{model.name}_device")
    return out, {"kind": "per_window", "epsilon": CONTRAST_EPSILON}
