"""GFLOPs of ViT / ViViT (`tl_keras.models.vit.flops`, through the public
`tl_keras.flops`): the paper's table, arguments vs built model, parameters, TF's
profiler."""

import pytest

from tl_keras import TL, flops
from tl_keras.models import create_model
from tl_keras.models.registry import resolve_model
from tl_keras.models.vit.flops import PAPER_TABLE, resolved_cost

TINY = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=4, num_heads=2,
            mlp_dim=64, num_classes=5)


@pytest.mark.parametrize("row", flops.PAPER_TABLE, ids=[r[0] for r in flops.PAPER_TABLE])
def test_paper_table_within_two_percent(row):
    description, name, kwargs, paper = row
    ours = flops.gflops(name, **kwargs)
    assert abs(ours / paper - 1) <= 0.02, f"{description}: {ours:.2f} vs paper {paper}"


def test_issue_rows_are_in_the_table():
    values = {round(row[3], 2) for row in flops.PAPER_TABLE}
    assert {55.63, 28.3, 28.7, 28.5, 29.1, 363.1, 186.8, 274.2, 361.6, 20.91, 28.66, 51.92,
            1446.0, 766.0, 1105.0} <= values


def test_known_values():
    # Hand count of ViT-B/16 at 224: 196 patches + class token.
    n, c, m = 197, 768, 3072
    expected = 196 * 16 * 16 * 3 * c + 12 * (4 * n * c * c + 2 * n * n * c + 2 * n * c * m)
    expected += c * 1000
    assert flops.gflops("vit_b16") == pytest.approx(expected / 1e9, rel=1e-12)
    assert flops.count_params("vit_b16") == 86_567_656
    assert flops.count_params("vit_l16") == 304_326_632


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("vit_b16", {}),
        ("vit_b16", dict(tokenlearner=TL(3, 2))),
        ("vit_b16", dict(tokenlearner=TL(3, 1, fuser=True), representation_size=8)),
        ("vit_b16", dict(tokenlearner=TL(3, 2, version="1"), extra_layers=2)),
        ("vit_b16", dict(tokenlearner=TL(2, 2, fuser=True, version="1"), include_top=False)),
        ("vit_b16", dict(image_size=(16, 40))),
        ("vivit_b16", dict(num_frames=4)),
        ("vivit_b16", dict(num_frames=4, tokenlearner=TL(3, 2), extra_layers=1)),
        ("vivit_b16", dict(num_frames=4, tokenlearner=TL(3, 2, fuser=True))),
        ("vivit_b16", dict(num_frames=4, tokenlearner=TL(3, 2, fuser=True),
                           fuser_mix_tokens_over_time=False)),
    ],
)
def test_arguments_and_built_model_agree(name, kwargs):
    kwargs = {**TINY, **kwargs}
    model = create_model(name, **kwargs)
    assert flops.gflops(model) == pytest.approx(flops.gflops(name, **kwargs), rel=1e-12)
    assert flops.count_params(name, **kwargs) == model.count_params()
    assert flops.count_params(model) == model.count_params()


@pytest.mark.parametrize("fuser", ["tokenfuser", "unpool", "reprojection"])
def test_fig7_fusers_by_hand(fuser):
    """B/16 @384, 8-TL at 6 with each Fig. 7 fuser: every fuser block's MACs by hand
    (N = 576 positions, S = 8 tokens, C = 768); the rest of the model is model "a"'s
    blocks on S tokens, the same for every fuser."""
    n, s, c = 576, 8, 768
    by_hand = {
        # token mixing C S^2, beta MLP N (C 64 + 64 S), weighted sum N S C
        "tokenfuser": c * s * s + n * (c * 64 + 64 * s) + n * s * c,
        # the TokenLearner's own maps, weighted sum only
        "unpool": n * s * c,
        # queries N, keys / values S: q, out N C^2; k, v 2 S C^2; QK^T, AV 2 N S C;
        # MLP 2 N C (4C)
        "reprojection": 2 * n * c * c + 2 * s * c * c + 2 * n * s * c + 2 * n * c * 4 * c,
    }[fuser]
    kwargs = dict(image_size=384, tokenlearner=TL(8, 6, fuser=fuser))
    cost = flops.cost("vit_b16", **kwargs)
    assert [cost.parts[f"tokenfuser_{k}"][0] for k in range(6)] == [by_hand] * 6
    model_a = flops.cost("vit_b16", image_size=384, tokenlearner=TL(8, 6))
    tokenlearners = sum(cost.parts[f"tokenlearner_{k}"][0] for k in range(1, 6))
    assert cost.macs == model_a.macs + 6 * by_hand + tokenlearners


def test_tokenlearner_saves_what_the_paper_says():
    base = flops.gflops("vit_b16", image_size=384)
    half = flops.gflops("vit_b16", image_size=384, tokenlearner=TL(8, 6))
    assert 0.5 < half / base < 0.52


@pytest.mark.tf_only
def test_matches_tensorflow_profiler():
    """TF's graph profiler counts 2 FLOPs per MAC; it also counts element-wise ops (which
    the paper's convention leaves out), so the totals agree within 5% and the matmul /
    convolution ops alone agree exactly."""
    import tensorflow as tf  # a TensorFlow-only test

    size = 64
    model = create_model("vit_b16", image_size=size, patch_size=8, hidden_dim=128,
                         num_layers=2, num_heads=4, mlp_dim=512, num_classes=10)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        tf.TensorSpec([1, size, size, 3])).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    total = tf.compat.v1.profiler.profile(
        graph=graph, options=builder(builder.float_operation()).with_empty_output().build())
    options = builder(builder.float_operation()).with_empty_output().build()
    options["account_type_regexes"] = ["MatMul", "BatchMatMul.*", "Conv2D"]
    products = tf.compat.v1.profiler.profile(graph=graph, options=options)
    ours = flops.gflops(model) * 1e9
    assert products.total_float_ops / 2 == ours
    assert abs(ours / (total.total_float_ops / 2) - 1) < 0.05


def test_parts_add_up():
    cost = resolved_cost(resolve_model("vit_b16", tokenlearner=TL(8, 6, fuser=True)))
    assert sum(m for m, _ in cost.parts.values()) == cost.macs
    assert sum(p for _, p in cost.parts.values()) == cost.params
    assert {"embedding", "encoderblock_11", "tokenlearner_5", "tokenfuser_5", "head"} <= set(
        cost.parts)
    assert flops.PAPER_TABLE is PAPER_TABLE
