"""Analytic GFLOPs and parameter counts of the X(2+1)D modules and networks (paper §6,
Tables 10-13), from the per-layer formulas of `tl_keras.models.flops_formulas`.

Units. `module_gflops` and `x2plus1d_gflops` return GMACs, the unit `tl_keras.flops`
reports as "GFLOPs" (the paper's ViT / ViViT tables are MACs). The paper's X(2+1)D
tables 12-13 are *not* MACs: their convolution rows are reproduced exactly by
2 x MACs at C = 432 (Conv2D + Conv1D: 2 x 9.173 = 18.35 -> "18.3", 2.24M), so
`flops_per_mac=2` gives numbers comparable with them (see BENCHMARKS.md).

Setting. The paper states the module input as T x H x W x C = 64 x 8 x 8 x 492 (and
Fig. 9 draws 128 -> 492 -> 128), but 492 reproduces none of its numbers while C = 432
(res5's inner width, "d = 432" in §6.1) reproduces the convolution rows exactly; the
default here is therefore `input_shape=(64, 8, 8, 432)`.

`python -m tl_keras.models.x2plus1d.flops` prints the BENCHMARKS.md tables.
"""

import inspect

from tl_keras.layers.tokenizers import FUSERS, TOKENIZERS
from tl_keras.models.flops_formulas import (
    Cost,
    conv_cost,
    dense_cost,
    fuser_cost,
    mhsa_cost,
    norm_params,
    tokenizer_cost,
    vector_attention_cost,
)
from tl_keras.models.registry import resolve_model
from tl_keras.models.x2plus1d.layers import (
    DEFAULT_MODULE,
    MODULE_TITLES,
    MODULES,
    SpaceTimeModule,
    check_module,
    tokenizer_options,
)
from tl_keras.models.x2plus1d.model import X2Plus1D

#: The paper's per-module numbers (Tables 12-13; 64 frames): GFLOPs, parameters (M),
#: Charades-6fps mAP. None where the paper gives none.
PAPER_MODULES = {
    "conv2d_conv1d": (18.3, 2.24, 56.6),
    "joint_mhsa": (22.0, 0.30, 57.9),
    "conv2d_joint_mhsa": (35.8, 1.98, 58.6),
    "conv2d_mlp_mixer": (13.8, 2.06, 57.0),
    "conv2d_temporal_transformer": (16.5, 1.98, 58.4),
    "spatial_temporal_transformer": (5.5, 0.59, 58.8),
    "conv2d_spatial_temporal_transformer": (19.2, 2.27, 58.0),
    "tokenlearner": (3.4, 0.81, 58.8),
    "conv2d_tokenlearner": (17.2, 2.49, 59.6),
    "tokenlearner_mhsa": (None, None, None),
    "conv2d_tokenlearner_mhsa": (None, None, 59.0),
    "spatial_tokenlearner": (6.2, 1.11, 58.9),
}

#: The paper's Table 14 (components, Charades 6 fps mAP; no GFLOPs given): module -> mAP.
PAPER_TABLE14 = {
    "conv2d_joint_mhsa": 58.4,  # "Standard transformer (MHSA)"
    "conv2d_vector_transformer": 58.1,
    "conv2d_prior_broadcast": 58.6,
    "conv2d_vector_transformer_broadcast": 58.9,
    "conv2d_tokenlearner_mhsa": 59.0,
    "conv2d_tokenlearner": 59.6,
}

#: The paper's whole-network GFLOPs of one 64-frame view (Tables 10-11).
PAPER_NETWORKS = {"conv2d_conv1d": 532.0, "conv2d_tokenlearner": 487.0}

PAPER_INPUT = (64, 8, 8, 432)  # T, H, W, C of the module (see the module docstring)


#: `SpaceTimeModule` options and their defaults (what `module_cost` accepts).
MODULE_OPTIONS = {
    k: p.default
    for k, p in inspect.signature(SpaceTimeModule.__init__).parameters.items()
    if k not in ("self", "module", "kwargs")
}


def token_module_cost(shape, num_tokens, tokenizer, attention, fuser, num_heads):
    """`TokenLearnerModule` on `shape` = (T, H, W, C)."""
    t, h, w, c = shape
    n, s = h * w, num_tokens
    m = t * s  # tokens of the clip
    convs = tokenizer_options(tokenizer).get("num_conv_layers")
    conv_option = {} if convs is None else {"num_conv_layers": convs}
    cost = Cost()
    cost.add("tokenlearner", *tokenizer_cost(tokenizer, t, n, c, s, **conv_option))
    if attention == "vector":
        macs, params = vector_attention_cost(m, c)
        cost.add("vector_attention", macs, params + norm_params(c))
    else:
        macs, params = mhsa_cost(m, m, c, num_heads)
        cost.add("mhsa", macs, params + norm_params(c))
    return cost.extend("", fuser_cost(fuser, t, n, c, s, tokenizer=tokenizer,
                                      num_heads=num_heads, **conv_option))


def _mlp_mixer_cost(t, c):
    """`FrameMLPMixer` with its default widths (token MLP T -> T -> T, channel MLP
    C -> C -> C) on T pooled frame tokens."""
    ht, hc = t, c
    macs = c * (t * ht + ht * t) + t * (c * hc + hc * c)
    params = (t * ht + ht + ht * t + t) + (c * hc + hc + hc * c + c) + 2 * norm_params(c)
    return macs, params


def module_cost(module=DEFAULT_MODULE, input_shape=PAPER_INPUT, **options):
    """`Cost` of a `SpaceTimeModule` on an input (T, H, W, C) (batch excluded).

    `options`: arguments of `SpaceTimeModule` (`num_tokens`, `tokenizer`, `fuser`,
    `num_heads`, `kernel_size`, `temporal_kernel_size`, `strides`, `depthwise`), with
    its defaults."""
    check_module(module, "module_cost")
    unknown = sorted(set(options) - set(MODULE_OPTIONS))
    if unknown:
        raise ValueError(f"module_cost: unknown options {unknown}; known: {sorted(MODULE_OPTIONS)}.")
    o = {**MODULE_OPTIONS, **options}
    if o["tokenizer"] not in TOKENIZERS:
        raise ValueError(f"module_cost: unknown `tokenizer`={o['tokenizer']!r}.")
    if o["fuser"] not in FUSERS:
        raise ValueError(f"module_cost: unknown `fuser`={o['fuser']!r}.")
    t, h, w, c = (int(v) for v in input_shape)
    s = o["strides"]
    h, w = -(-h // s), -(-w // s)
    positions = t * h * w
    groups = c if o["depthwise"] else 1
    cost = Cost()
    for part in MODULES[module]:
        if part == "conv2d":
            k2 = o["kernel_size"] ** 2
            macs, params = conv_cost(positions, k2, c, c, groups)
            cost.add("conv2d", macs, params + norm_params(c))
        elif part == "conv1d":
            cost.add("conv1d", *conv_cost(positions, o["temporal_kernel_size"], c, c, groups))
        elif part in ("joint_mhsa", "spatial_mhsa", "temporal_mhsa"):
            seq = {"joint_mhsa": positions, "spatial_mhsa": h * w, "temporal_mhsa": t}[part]
            macs, params = mhsa_cost(positions, seq, c, o["num_heads"])
            cost.add(part, macs, params + norm_params(c))
        elif part == "mlp_mixer":
            cost.add("mlp_mixer", *_mlp_mixer_cost(t, c))
        elif part == "joint_vectt":
            macs, params = vector_attention_cost(positions, c)
            cost.add(part, macs, params + norm_params(c))
        elif part == "vectt_broadcast":
            macs, params = vector_attention_cost(t, c)  # over the T pooled frame tokens
            cost.add(part, macs, params + norm_params(c))
        elif part == "prior_broadcast":
            value_macs, value_params = dense_cost(c, c, positions=t)
            # value projection + the T x T prior applied per channel
            cost.add(part, value_macs + t * t * c, value_params + t * t + norm_params(c))
        else:  # tokenlearner, tokenlearner_mhsa
            attention = "mhsa" if part == "tokenlearner_mhsa" else "vector"
            cost.extend("", token_module_cost(
                (t, h, w, c), o["num_tokens"], o["tokenizer"], attention, o["fuser"],
                o["num_heads"],
            ))
    return cost


def module_gflops(module=DEFAULT_MODULE, input_shape=PAPER_INPUT, flops_per_mac=1, **options):
    """GFLOPs of one module (GMACs by default; `flops_per_mac=2` for the convention of
    the paper's Tables 12-13). `options` as `module_cost`."""
    return module_cost(module, input_shape, **options).macs * flops_per_mac / 1e9


def module_params(module=DEFAULT_MODULE, input_shape=PAPER_INPUT, **options):
    """Trainable parameters of one module."""
    return module_cost(module, input_shape, **options).params


# ----------------------------------------------------------------------------------------
# Whole network.


def unit_cost(in_shape, filters, inner, strides, options):
    """`X2Plus1DUnit(filters, inner, strides, **options)` on `in_shape` = (T, H, W, C_in);
    returns the `Cost` and the output shape."""
    t, h, w, cin = in_shape
    ho, wo = -(-h // strides), -(-w // strides)
    options = dict(options)
    module = options.pop("module")
    cost = Cost()
    macs, params = conv_cost(t * h * w, 1, cin, inner)
    cost.add("conv_a", macs, params + norm_params(inner))
    cost.extend("module_", module_cost(module, (t, h, w, inner), strides=strides, **options))
    cost.add("norm_b", 0, norm_params(inner))
    macs, params = conv_cost(t * ho * wo, 1, inner, filters)
    cost.add("conv_c", macs, params + norm_params(filters))
    if cin != filters or strides > 1:
        macs, params = conv_cost(t * ho * wo, 1, cin, filters)
        cost.add("shortcut", macs, params + norm_params(filters))
    return cost, (t, ho, wo, filters)


def resolved_cost(r):
    """`Cost` of a network from its resolved arguments (`X2Plus1D.resolved`)."""
    t = r.num_frames
    h, w = r.grid()
    cost = Cost()
    groups = r.stem_width if r.depthwise else 1
    xy = conv_cost(t * h * w, 9, 3, r.stem_width)
    time = conv_cost(t * h * w, r.stem_temporal_kernel_size, r.stem_width, r.stem_width, groups)
    cost.add("stem", xy[0] + time[0], xy[1] + time[1] + norm_params(r.stem_width))
    shape = (t, h, w, r.stem_width)
    for stage, (width, depth, inner) in enumerate(zip(r.widths, r.depths, r.inner_widths)):
        for j in range(depth):
            unit, shape = unit_cost(shape, width, inner, 2 if j == 0 else 1,
                                    r.unit_options(stage))
            cost.extend(f"res{stage + 2}_", unit)
    t, h, w, c = shape
    macs, params = conv_cost(t * h * w, 1, c, r.head_width)
    cost.add("head_conv", macs, params + norm_params(r.head_width))
    cost.add("fc", *dense_cost(r.head_width, r.fc_width, use_bias=False))
    if r.include_top:
        cost.add("head", *dense_cost(r.fc_width, r.num_classes))
    return cost


def x2plus1d_cost(model_or_name="x2plus1d_m", **kwargs):
    """`Cost` of an `X2Plus1D` model, or of a registered name with keyword arguments
    (resolved like the constructor; nothing is built)."""
    if isinstance(model_or_name, X2Plus1D):
        if kwargs:
            raise ValueError("x2plus1d_cost: keyword arguments are only used with a name.")
        return resolved_cost(model_or_name.resolved)
    return resolved_cost(resolve_model(model_or_name, **kwargs))


def x2plus1d_gflops(model_or_name="x2plus1d_m", flops_per_mac=1, **kwargs):
    """GFLOPs (GMACs by default) of one clip through an X(2+1)D network."""
    return x2plus1d_cost(model_or_name, **kwargs).macs * flops_per_mac / 1e9


# ----------------------------------------------------------------------------------------
# The BENCHMARKS.md table.

TABLE_MODULES = (
    "conv2d_conv1d",
    "joint_mhsa",
    "conv2d_joint_mhsa",
    "conv2d_mlp_mixer",
    "conv2d_temporal_transformer",
    "spatial_temporal_transformer",
    "conv2d_spatial_temporal_transformer",
    "tokenlearner",
    "spatial_tokenlearner",
    "conv2d_tokenlearner",
    "tokenlearner_mhsa",
    "conv2d_tokenlearner_mhsa",
)


def _fmt(v, spec):
    return "–" if v is None else format(v, spec)


def module_table_rows(input_shapes=((64, 8, 8, 432), (64, 8, 8, 492)), num_tokens=8):
    """Rows `(module, title, paper (gflops, mparams, map), [(gmacs, params) per shape])`."""
    rows = []
    for module in TABLE_MODULES:
        ours = []
        for shape in input_shapes:
            cost = module_cost(module, shape, num_tokens=num_tokens)
            ours.append((cost.gmacs, cost.params))
        rows.append((module, MODULE_TITLES[module], PAPER_MODULES[module], ours))
    return rows


def module_table_markdown():
    """The per-module table of BENCHMARKS.md (values as printed there)."""
    lines = [
        "| Module (`module=`) | Paper GFLOPs | Paper params | Ours GFLOPs = 2 x GMACs, C=432 "
        "| Ours GMACs, C=432 | Ours params, C=432 | Ours GFLOPs = 2 x GMACs, C=492 "
        "| Ours params, C=492 | Paper Charades-6fps mAP |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module, title, (p_gf, p_mp, p_map), ours in module_table_rows():
        (g432, p432), (g492, p492) = ours
        lines.append(
            f"| {title} (`{module}`) | {_fmt(p_gf, '.1f')} | "
            f"{'–' if p_mp is None else f'{p_mp:.2f}M'} | {2 * g432:.2f} | {g432:.3f} | "
            f"{p432 / 1e6:.2f}M | {2 * g492:.2f} | {p492 / 1e6:.2f}M | {_fmt(p_map, '.1f')} |"
        )
    return "\n".join(lines)


def network_table_markdown():
    """Whole X(2+1)D-M at 64 frames, next to the paper's Tables 10-11."""
    lines = [
        "| Network (64 frames) | Paper GFLOPs | Ours GFLOPs = 2 x GMACs, 256 px "
        "| Ours GMACs, 256 px | Ours GMACs, 224 px | Ours params |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for module, title in (("conv2d_conv1d", "X(2+1)D-M backbone"),
                          ("conv2d_tokenlearner", "X(2+1)D-M + Conv2D + TokenLearner (ours)")):
        c256 = x2plus1d_cost("x2plus1d_m", module=module, image_size=256)
        c224 = x2plus1d_cost("x2plus1d_m", module=module, image_size=224)
        lines.append(
            f"| {title} (`module=\"{module}\"`) | {PAPER_NETWORKS[module]:.0f} | "
            f"{2 * c256.gmacs:.1f} | {c256.gmacs:.1f} | {c224.gmacs:.1f} | "
            f"{c256.params / 1e6:.2f}M |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# The TokenLearner-module rows of Tables 12-13 and the network totals: readings tried.


def _token_module_reading(shape=PAPER_INPUT, *, fuser_bottleneck=64, mix_all=True,
                          output_projection=False, position_projection=False,
                          tokenizer="1", tokenizer_bottleneck=64):
    """MACs and parameters of the TokenLearner module ("tokenlearner", no Conv2D) under
    one reading of the paper: the TokenFuser's beta-MLP width, its token mixing over all
    T*S tokens or per frame, a C x C output projection after VectorAttention (on the
    T*S tokens) or on all T*H*W positions, the token learner (`"1"`: one 3x3 conv, or
    `"1.1"` with an MLP of `tokenizer_bottleneck`)."""
    t, h, w, c = shape
    n, s = h * w, 8
    options = ({"num_conv_layers": 1} if tokenizer == "1"
               else {"bottleneck_dim": tokenizer_bottleneck})
    macs, params = tokenizer_cost(tokenizer, t, n, c, s, **options)
    va_macs, va_params = vector_attention_cost(t * s, c)
    macs, params = macs + va_macs, params + va_params + norm_params(c)
    if output_projection or position_projection:
        out = dense_cost(c, c, t * s if output_projection else t * n)
        macs, params = macs + out[0], params + out[1]
    fuser = fuser_cost("tokenfuser", t, n, c, s, bottleneck_dim=fuser_bottleneck,
                       mix_tokens_over_time=mix_all)
    return macs + fuser.macs, params + fuser.params


def paper_reading_candidates():
    """Readings of the paper tried against its TokenLearner-module rows (Table 12:
    "Ours (TokenLearner)" 3.4 GFLOPs / 0.81M, "Ours (Conv2D + TokenLearner)" 17.2 /
    2.49M). Rows `(reading, GFLOPs, params, GFLOPs with the Conv2D, params with it)`,
    GFLOPs = 2 x GMACs (+ what the reading adds) at 64 x 8 x 8 x C, 8 tokens per frame."""

    def conv2d(h, c):  # the module's 3x3 Conv2D (+ batch norm) on 64 x h x h x c
        macs, params = conv_cost(64 * h * h, 9, c, c)
        return macs, params + norm_params(c)

    attention_elements = (64 * 8) ** 2 * 432  # VectorAttention's softmax input, per channel
    rows = []

    def add(reading, macs, params, extra_flops=0, conv=conv2d(8, 432), flops_per_mac=2):
        flops_ = flops_per_mac * macs + extra_flops
        rows.append((reading, flops_ / 1e9, params,
                     (flops_ + flops_per_mac * conv[0]) / 1e9, params + conv[1]))

    add("ours: C=432, TokenFuser MLP 64, mixing all T*S tokens (§2.2)",
        *_token_module_reading())
    add("the same, counted in MACs (1 x MACs)", *_token_module_reading(), flops_per_mac=1)
    add("C=492 (§6.3's 8 x 8 x 64 x 492 input)", *_token_module_reading((64, 8, 8, 492)),
        conv=conv2d(8, 492))
    add("7 x 7 grid (224 px input; Fig. 9's 49*T tokens)",
        *_token_module_reading((64, 7, 7, 432)), conv=conv2d(7, 432))
    add("mixing per frame (S x S, the reference implementation)",
        *_token_module_reading(mix_all=False))
    add("mixing per frame + an output projection after VectorAttention",
        *_token_module_reading(mix_all=False, output_projection=True))
    add("mixing per frame + a C x C projection on all 4096 positions",
        *_token_module_reading(mix_all=False, position_projection=True))
    add("the same + softmax at 4 FLOPs per attention element",
        *_token_module_reading(mix_all=False, position_projection=True),
        extra_flops=4 * attention_elements)
    add("TokenFuser MLP width d=432 (§6.1 'intermediate channel size'), mixing all",
        *_token_module_reading(fuser_bottleneck=432))
    add("TokenFuser MLP width d=432, mixing per frame",
        *_token_module_reading(fuser_bottleneck=432, mix_all=False))
    for per_element in (4, 5):
        add(f"TokenFuser MLP d=432, per frame, + softmax at {per_element} FLOPs per "
            "attention element", *_token_module_reading(fuser_bottleneck=432, mix_all=False),
            extra_flops=per_element * attention_elements)
    add("TokenLearner v1.1 and TokenFuser MLPs both d=432, per frame",
        *_token_module_reading(fuser_bottleneck=432, mix_all=False, tokenizer="1.1",
                               tokenizer_bottleneck=432))
    return rows


def paper_reading_markdown():
    """`paper_reading_candidates` as the table of BENCHMARKS.md."""
    lines = [
        "| Reading (TokenLearner module, 64 x 8 x 8 x C) | GFLOPs | Params "
        "| With Conv2D: GFLOPs | Params |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| **paper (Table 12)** | **3.4** | **0.81M** | **17.2** | **2.49M** |",
    ]
    for reading, g, p, g2, p2 in paper_reading_candidates():
        lines.append(f"| {reading} | {g:.2f} | {p / 1e6:.3f}M | {g2:.2f} | {p2 / 1e6:.3f}M |")
    return "\n".join(lines)


def network_reading_rows():
    """Whole-network readings tried against the paper's 532 (backbone) and 487
    (TokenLearner) GFLOPs of one 64-frame view: `(reading, GFLOPs)`."""
    rows = []
    back = x2plus1d_cost("x2plus1d_m", module="conv2d_conv1d", image_size=256)
    ours = x2plus1d_cost("x2plus1d_m", module="conv2d_tokenlearner", image_size=256)
    rows.append(("ours, 256 px, backbone", 2 * back.gmacs))
    rows.append(("ours, 256 px, Conv2D + TokenLearner in res5's 7 units", 2 * ours.gmacs))
    at224 = x2plus1d_cost("x2plus1d_m", module="conv2d_tokenlearner", image_size=224)
    rows.append(("ours, 224 px (training size), Conv2D + TokenLearner", 2 * at224.gmacs))
    plain = x2plus1d_cost("x2plus1d_m", module="tokenlearner", image_size=256)
    rows.append(("ours, 256 px, TokenLearner without Conv2D in all 7 units", 2 * plain.gmacs))
    conv1d = 2 * module_cost("conv2d_conv1d").gmacs
    best = [r for r in paper_reading_candidates() if "5 FLOPs" in r[0]][0][3]
    rows.append(("ours backbone - 7 x (Conv2D+Conv1D - the d=432, per-frame, softmax-at-5 "
                 "module reading)",
                 2 * back.gmacs - 7 * (conv1d - best)))
    rows.append(("paper's own Table 12: 532 - 7 x (18.3 - 17.2)", 532 - 7 * (18.3 - 17.2)))
    rows.append(("paper's own Table 12: 532 - 3 x (18.3 - 3.4), no Conv2D in 3 units",
                 532 - 3 * (18.3 - 3.4)))
    return rows


if __name__ == "__main__":  # python -m tl_keras.models.x2plus1d.flops
    print(module_table_markdown())
    print()
    print(network_table_markdown())
    print()
    print(paper_reading_markdown())
    print()
    for reading, value in network_reading_rows():
        print(f"* {reading}: {value:.1f}")
