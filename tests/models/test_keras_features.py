"""Keras' model-level features on every model family: `model.quantize("int8")` gives
logits close to float32 (it used to return unrelated logits for ViT and raise for a
TokenLearner model), and LoRA on the Dense layers changes the output and is what trains.
"""

import keras
import numpy as np
import pytest

from test_case import predict, to_numpy
from tl_keras import TL
from tl_keras.models import create_model

VIT = dict(image_size=32, patch_size=8, hidden_dim=64, num_layers=4, num_heads=2,
           mlp_dim=128, num_classes=10)
X2P1D = dict(num_frames=4, image_size=64, stem_width=4, widths=(4, 8, 8, 16),
             depths=(1, 1, 1, 2), expansion=2, head_width=16, fc_width=12, num_heads=2,
             tokenlearner=4, num_classes=10)
MODELS = {
    "vit": ("vit_b16", VIT, (16, 32, 32, 3)),
    "vit_tl": ("vit_b16", dict(VIT, tokenlearner=TL(4, at=2)), (16, 32, 32, 3)),
    "vit_tl_fuser": ("vit_b16", dict(VIT, tokenlearner=TL(4, at=2, fuser=True)),
                     (16, 32, 32, 3)),
    "vivit_tl_fuser": ("vivit_b16", dict(VIT, num_frames=4, tubelet_size=2,
                                          tokenlearner=TL(4, at=2, fuser=True)),
                       (8, 4, 32, 32, 3)),
    "x2plus1d_tl": ("x2plus1d_m", X2P1D, (8, 4, 64, 64, 3)),
}


def build(name, seed=0):
    model_name, kwargs, shape = MODELS[name]
    model = create_model(model_name, **kwargs)
    rng = np.random.default_rng(seed)
    # Off the initialisation (zero heads and mixings would make every output alike).
    for w in model.weights:
        if w.trainable:
            w.assign(to_numpy(w) + rng.normal(0, 0.05, w.shape).astype("float32"))
    x = rng.uniform(-1, 1, shape).astype("float32")
    return model, x


def dense_layers(model):
    return [l for l in model._flatten_layers() if isinstance(l, keras.layers.Dense)]


@pytest.mark.filterwarnings("ignore:Layer .* does not have a `quantize` method")
@pytest.mark.parametrize("name", sorted(MODELS))
def test_int8_quantization_keeps_the_logits(name):
    model, x = build(name)
    expected = predict(model, x)
    model.quantize("int8")
    quantized = [l for l in dense_layers(model) if l.quantization_mode == "int8"]
    assert quantized, "no Dense layer was quantized"
    got = predict(model, x)
    scale = np.abs(expected).max()
    err = np.abs(got - expected).max() / scale
    agree = np.mean(got.argmax(-1) == expected.argmax(-1))
    assert err < 0.08, f"max error {err:.3f} of the logits' scale"
    assert agree >= 0.75, f"top-1 agreement {agree:.2f}"


@pytest.mark.parametrize("name", ["vit_tl_fuser", "x2plus1d_tl"])
def test_lora_on_dense_layers_changes_the_output_and_trains(name):
    model, x = build(name)
    before = predict(model, x)
    denses = dense_layers(model)
    for layer in denses:
        layer.enable_lora(2)
    np.testing.assert_allclose(predict(model, x), before, atol=1e-5)
    rng = np.random.default_rng(1)
    for layer in denses:
        layer.lora_kernel_b.assign(rng.normal(0, 0.1, layer.lora_kernel_b.shape))
    after = predict(model, x)
    assert np.abs(after - before).max() > 1e-3
    lora = {id(v) for l in denses for v in (l.lora_kernel_a, l.lora_kernel_b)}
    kernels = {id(l._kernel) for l in denses}
    trainable = {id(v) for v in model.trainable_weights}
    assert lora <= trainable and not kernels & trainable
    # One optimizer step moves the LoRA weights and leaves the frozen kernels alone.
    frozen = [to_numpy(l._kernel).copy() for l in denses]
    lora_before = [to_numpy(l.lora_kernel_a).copy() for l in denses]
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, np.zeros_like(after), batch_size=len(x), epochs=1, verbose=0)
    for layer, k in zip(denses, frozen):
        np.testing.assert_array_equal(to_numpy(layer._kernel), k)
    assert any(not np.array_equal(to_numpy(l.lora_kernel_a), a)
               for l, a in zip(denses, lora_before))
