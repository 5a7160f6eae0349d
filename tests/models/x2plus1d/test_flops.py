"""GFLOPs and parameter counts of the X(2+1)D modules and networks
(`tl_keras.models.x2plus1d.flops`): against the built layers, hand formulas, an
independent layer walk, the paper, and BENCHMARKS.md."""

import pathlib

import keras
import numpy as np
import pytest

from tl_keras import flops
from tl_keras.models.x2plus1d import MODULES, SpaceTimeModule, x2plus1d_m
from tl_keras.models.x2plus1d.flops import (
    PAPER_MODULES,
    module_cost,
    module_gflops,
    module_params,
    module_table_markdown,
    network_reading_rows,
    network_table_markdown,
    paper_reading_candidates,
    paper_reading_markdown,
    x2plus1d_cost,
    x2plus1d_gflops,
)

ROOT = pathlib.Path(__file__).resolve().parents[3]
T, H, W, C, S = 64, 8, 8, 432, 8
P = T * H * W  # 4096 positions of the paper's module input
M = T * S  # 512 tokens

TINY = dict(
    num_frames=4, image_size=64, stem_width=4, widths=(4, 8, 8, 16), depths=(1, 1, 1, 2),
    expansion=2, head_width=16, fc_width=12, num_heads=2, tokenlearner=4,
)


@pytest.fixture(scope="module")
def tiny():
    """`x2plus1d_m(5, **TINY)`, built once (the tests only count it)."""
    return x2plus1d_m(5, **TINY)


def trainable(layer):
    return int(sum(np.prod(w.shape) for w in layer.trainable_weights))


class TestParameters:
    def test_paper_size_modules_match_the_layers(self):
        for module in sorted(MODULES):
            layer = SpaceTimeModule(module)
            layer.build((None, T, H, W, C))
            assert trainable(layer) == module_params(module), module

    def test_token_variants_match_the_layers(self):
        for tokenizer in ("1", "1.1", "grid", "pool", "fc", "pool_mlp"):
            for fuser in ("tokenfuser", "unpool", "reprojection"):
                if tokenizer == "pool_mlp" and fuser == "unpool":
                    continue  # no maps to unpool with
                layer = SpaceTimeModule("conv2d_tokenlearner", num_tokens=4,
                                        tokenizer=tokenizer, fuser=fuser, num_heads=2, strides=2)
                layer.build((None, 4, 8, 8, 16))
                cost = module_cost("conv2d_tokenlearner", (4, 8, 8, 16), num_tokens=4,
                                   tokenizer=tokenizer, fuser=fuser, num_heads=2, strides=2)
                assert trainable(layer) == cost.params, (tokenizer, fuser)

    @pytest.mark.parametrize(
        "module",
        ["conv2d_tokenlearner"]
        + [pytest.param(m, marks=pytest.mark.slow) for m in ("joint_mhsa", "conv2d_conv1d")],
    )
    def test_tiny_network_matches_the_model(self, module, tiny):
        model = tiny if module == "conv2d_tokenlearner" else x2plus1d_m(5, module=module, **TINY)
        assert trainable(model) == x2plus1d_cost(model).params
        assert x2plus1d_cost(model).params == x2plus1d_cost("x2plus1d_m", num_classes=5,
                                                            module=module, **TINY).params

    @pytest.mark.slow
    def test_full_network_matches_the_model(self):
        model = x2plus1d_m(157)
        assert trainable(model) == x2plus1d_cost("x2plus1d_m").params


class TestHandFormulas:
    """The paper's setting, formulas written out independently of the counting code."""

    def test_conv2d_conv1d(self):
        assert module_cost("conv2d_conv1d").macs == P * (9 + 3) * C * C
        assert module_params("conv2d_conv1d") == 12 * C * C + 2 * C  # + Conv2D's BN

    def test_joint_mhsa(self):
        macs = 4 * P * C * C + 2 * P * P * C  # q, k, v, out; QK^T and AV over 4096 tokens
        assert module_cost("joint_mhsa").macs == macs
        assert module_params("joint_mhsa") == 4 * C * C + 4 * C + 2 * C

    def test_spatial_and_temporal_mhsa(self):
        per_axis = 4 * P * C * C + 2 * 64 * 64 * 64 * C  # 64 sequences of 64 either way
        assert module_cost("spatial_temporal_transformer").macs == 2 * per_axis

    def test_conv2d_tokenlearner(self):
        alpha = P * 9 * C * S  # one 3x3 conv C -> S
        pool = T * S * (H * W) * C
        va = 3 * M * C * C + 2 * M * M * C
        fuser = M * M * C + P * (C * 64 + 64 * S) + P * S * C
        assert module_cost("conv2d_tokenlearner").macs == P * 9 * C * C + alpha + pool + va + fuser

    def test_mlp_mixer(self):
        mixer = C * 2 * T * T + T * 2 * C * C  # token MLP T->T->T, channel MLP C->C->C
        assert module_cost("conv2d_mlp_mixer").macs == P * 9 * C * C + mixer

    def test_depthwise_and_strides(self):
        assert module_cost("conv2d_conv1d", depthwise=True).macs == P * 12 * C
        assert module_cost("conv2d_conv1d", (T, 16, 16, C), strides=2).macs == P * 12 * C * C


class TestPaper:
    """The rows the interpretation (C = 432, full convs, 2 x MACs) reproduces."""

    @pytest.mark.parametrize("module", ["conv2d_conv1d", "conv2d_mlp_mixer"])
    def test_reproduced_rows(self, module):
        gflops, mparams, _ = PAPER_MODULES[module]
        assert round(module_gflops(module, flops_per_mac=2), 1) == gflops
        assert round(module_params(module) / 1e6, 2) == mparams

    def test_conv2d_is_the_paper_difference(self):
        conv2d = module_cost("conv2d_tokenlearner").parts["conv2d"]
        for with_conv, without in (("conv2d_tokenlearner", "tokenlearner"),
                                   ("conv2d_joint_mhsa", "joint_mhsa")):
            paper = PAPER_MODULES[with_conv][0] - PAPER_MODULES[without][0]
            assert round(2 * conv2d[0] / 1e9, 1) == round(paper, 1)
            ours = module_gflops(with_conv, flops_per_mac=2) - module_gflops(without, flops_per_mac=2)
            assert ours == pytest.approx(2 * conv2d[0] / 1e9)
        assert round(conv2d[1] / 1e6, 2) == round(2.49 - 0.81, 2)

    def test_c492_reproduces_nothing(self):
        for module, (gflops, mparams, _) in PAPER_MODULES.items():
            if gflops is None:
                continue
            cost = module_cost(module, (64, 8, 8, 492))
            assert round(2 * cost.gmacs, 1) != gflops or round(cost.params / 1e6, 2) != mparams

    def test_backbone_close_to_the_paper(self):
        ours = x2plus1d_gflops("x2plus1d_m", module="conv2d_conv1d", image_size=256,
                               flops_per_mac=2)
        assert abs(ours / 532.0 - 1) < 0.02


class TestIndependentWalk:
    """Counts the MACs of the convolutions and dense layers of a built network from
    their kernels and the shapes seen in a forward pass (nothing shared with the
    analytic formulas)."""

    @staticmethod
    def walk(model, x):
        records = []
        layers = [
            l for l in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(l, (keras.layers.Conv3D, keras.layers.Dense))
        ]
        originals = {}
        for layer in layers:
            originals[id(layer)] = layer.call

            def wrapped(inputs, *args, _layer=layer, **kwargs):
                out = originals[id(_layer)](inputs, *args, **kwargs)
                records.append((_layer, tuple(inputs.shape), tuple(out.shape)))
                return out

            layer.call = wrapped
        try:
            model(x)
        finally:
            for layer in layers:
                del layer.call
        macs = 0
        for layer, in_shape, out_shape in records:
            kernel = tuple(layer.kernel.shape)
            if isinstance(layer, keras.layers.Conv3D):  # per output position: kernel volume
                macs += int(np.prod(out_shape[1:-1])) * int(np.prod(kernel))
            else:
                macs += int(np.prod(in_shape[1:-1] or (1,))) * kernel[0] * kernel[1]
        return macs

    @pytest.mark.parametrize("module", ["conv2d_conv1d", "conv2d_mlp_mixer"])
    def test_network(self, module):
        model = x2plus1d_m(5, module=module, **TINY)
        x = np.zeros((1, 4, 64, 64, 3), "float32")
        assert self.walk(model, x) == x2plus1d_cost(model).macs


class TestApi:
    def test_gflops_dispatch(self, tiny):
        model = tiny
        assert flops.gflops(model) == pytest.approx(x2plus1d_gflops(model))
        assert flops.gflops("x2plus1d_m", num_classes=5, **TINY) == pytest.approx(
            x2plus1d_gflops(model)
        )
        assert flops.count_params("x2plus1d_m") == x2plus1d_cost("x2plus1d_m").params

    def test_defaults_and_units(self):
        assert module_gflops() == pytest.approx(module_cost("conv2d_tokenlearner").macs / 1e9)
        assert module_gflops("conv2d_conv1d", flops_per_mac=2) == pytest.approx(
            2 * module_gflops("conv2d_conv1d")
        )
        with pytest.raises(ValueError, match="module"):
            module_cost("conv3d")
        with pytest.raises(ValueError, match="unknown options"):
            module_cost("conv2d_conv1d", num_token=4)
        with pytest.raises(ValueError, match="tokenizer"):
            module_cost("conv2d_tokenlearner", tokenizer="2")


class TestBenchmarks:
    def test_tables_in_benchmarks_md_are_the_computed_ones(self):
        text = (ROOT / "BENCHMARKS.md").read_text()
        start = text.index("## X(2+1)D-M bottleneck module: GFLOPs and parameters")
        end = text.find("\n## ", start + 1)
        section = text[start:] if end < 0 else text[start:end]
        assert module_table_markdown() in section
        assert network_table_markdown() in section
        indented = "\n".join("  " + line for line in paper_reading_markdown().split("\n"))
        assert indented in section
        for reading, value in network_reading_rows():
            assert f"| {reading} | {value:.1f} |" in section

    def test_paper_readings(self):
        """The readings of Table 12's TokenLearner rows (issue #18): the first is our
        module exactly; the numbers BENCHMARKS.md discusses."""
        rows = {r[0]: r[1:] for r in paper_reading_candidates()}
        ours = rows["ours: C=432, TokenFuser MLP 64, mixing all T*S tokens (§2.2)"]
        tl, conv_tl = module_cost("tokenlearner"), module_cost("conv2d_tokenlearner")
        assert ours == pytest.approx((2 * tl.gmacs, tl.params, 2 * conv_tl.gmacs, conv_tl.params))
        d432 = rows["TokenFuser MLP d=432, per frame, + softmax at 5 FLOPs per attention element"]
        assert [round(v, 2) for v in d432[::2]] == [3.46, 17.22]  # paper 3.4, 17.2
        assert [round(v / 1e6, 3) for v in d432[1::2]] == [0.787, 2.468]  # paper 0.81M, 2.49M
        projection = rows["mixing per frame + an output projection after VectorAttention"]
        assert [round(v / 1e6, 3) for v in projection[1::2]] == [0.812, 2.492]
        assert dict(network_reading_rows())[
            "paper's own Table 12: 532 - 7 x (18.3 - 17.2)"] == pytest.approx(524.3)
