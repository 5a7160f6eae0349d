"""Analytic GFLOPs and parameter counts of the X(2+1)D modules and networks.

Counted like the paper (DESIGN §8): multiply-accumulates (MACs) of the convolutions,
dense layers and attention products (`QK^T` and `AV` of MHSA; `q * k` and `a * v` of
vector attention; the weighted sums of token learners and fusers); normalisations,
activations, softmax, pooling and additions are not counted. Parameters are the
trainable ones (batch-norm moving statistics excluded), exactly what the Keras layers
hold (checked by the tests).

Units. `module_gflops` and `x2plus1d_gflops` return GMACs, the unit `tl_keras.flops`
reports as "GFLOPs" (the paper's ViT / ViViT tables are MACs). The paper's X(2+1)D
tables 12-13 are *not* MACs: their convolution rows are reproduced exactly by
2 x MACs at C = 432 (Conv2D + Conv1D: 2 x 9.173 = 18.35 -> "18.3", 2.24M), so
`flops_per_mac=2` gives numbers comparable with them (see BENCHMARKS.md).

Setting. The paper states the module input as T x H x W x C = 64 x 8 x 8 x 492 (and
Fig. 9 draws 128 -> 492 -> 128), but 492 reproduces none of its numbers while C = 432
(res5's inner width, "d = 432" in §6.1) reproduces the convolution rows exactly; the
default here is therefore `input_shape=(64, 8, 8, 432)`.

`python -m tl_keras.flops_x2plus1d` prints the BENCHMARKS.md table.
"""

import dataclasses

from tl_keras.layers.baselines import FUSERS, TOKENIZERS
from tl_keras.layers.conv2plus1d import DEFAULT_MODULE, MODULE_TITLES, MODULES

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

#: The paper's whole-network GFLOPs of one 64-frame view (Tables 10-11).
PAPER_NETWORKS = {"conv2d_conv1d": 532.0, "conv2d_tokenlearner": 487.0}

PAPER_INPUT = (64, 8, 8, 432)  # T, H, W, C of the module (see the module docstring)
TL_BOTTLENECK = 64  # hidden width of the TokenLearner v1.1 / TokenFuser MLPs


@dataclasses.dataclass
class Cost:
    """MACs and trainable parameters, with a per-part breakdown."""

    macs: int = 0
    params: int = 0
    parts: dict = dataclasses.field(default_factory=dict)

    def add(self, name, macs, params):
        self.macs += int(macs)
        self.params += int(params)
        old = self.parts.get(name, (0, 0))
        self.parts[name] = (old[0] + int(macs), old[1] + int(params))
        return self

    def extend(self, prefix, other):
        for name, (macs, params) in other.parts.items():
            self.add(f"{prefix}{name}", macs, params)
        return self

    @property
    def gmacs(self):
        return self.macs / 1e9


def _ln(c):
    return 2 * c


def _heads_width(channels, num_heads):
    return num_heads * max(channels // num_heads, 1)


def mhsa_cost(tokens, seq_len, channels, num_heads=8, queries=None):
    """Keras `MultiHeadAttention` on `tokens` tokens in sequences of `seq_len` keys
    (queries = keys unless `queries` (total query tokens) is given): q/k/v/out
    projections with biases, `QK^T` and `AV`."""
    c, hk = channels, _heads_width(channels, num_heads)
    queries = tokens if queries is None else queries
    macs = queries * c * hk + 2 * tokens * c * hk + queries * hk * c  # q, k, v, out
    macs += 2 * queries * seq_len * hk  # QK^T and AV
    params = 3 * (c * hk + hk) + hk * c + c
    return macs, params


def tokenizer_cost(version, frames, positions, channels, num_tokens, maps_only=False):
    """A token learner on `frames` frames of `positions` positions (module options of
    `tokenizer_options`: version "1" = one 3x3 conv). `maps_only`: only what computes the
    maps again (for the unpool fuser)."""
    t, n, c, s = frames, positions, channels, num_tokens
    pool = t * s * n * c  # weighted sum over positions
    if version == "1":
        macs, params = t * n * 9 * c * s, 9 * c * s + _ln(c)
    elif version == "1.1":
        b = TL_BOTTLENECK
        macs, params = t * n * (c * b + b * s), _ln(c) + c * b + b + b * s + s
    elif version == "grid":
        macs, params = 0, 0
    elif version == "pool":  # max pooling: comparisons only
        macs, params, pool = 0, 0, 0
    elif version == "fc":
        macs, params = 0, n * s + s
    elif version == "pool_mlp":
        macs, params, pool = t * (c * c + c * s * c), c * c + c + c * s * c + s * c, 0
    else:
        raise ValueError(f"tokenizer_cost: unknown `version`={version!r}.")
    if maps_only:
        return macs, 0
    return macs + pool, params


def token_module_cost(shape, num_tokens=8, tokenizer="1", attention="vector",
                      fuser="tokenfuser", num_heads=8):
    """`TokenLearnerModule` on `shape` = (T, H, W, C)."""
    t, h, w, c = shape
    n, s = h * w, num_tokens
    m = t * s  # tokens of the clip
    cost = Cost()
    cost.add("tokenlearner", *tokenizer_cost(tokenizer, t, n, c, s))
    if attention == "vector":
        macs = 3 * m * c * c + 2 * m * m * c  # q, k, v; q*k and a*v per channel
        cost.add("vector_attention", macs, 3 * (c * c + c) + _ln(c))
    else:
        macs, params = mhsa_cost(m, m, c, num_heads)
        cost.add("mhsa", macs, params + _ln(c))
    if fuser == "tokenfuser":
        b = TL_BOTTLENECK
        cost.add("fuser_token_mixing", m * m * c, m * m + m + 2 * _ln(c))
        cost.add("fuser_beta_mlp", t * n * (c * b + b * s), _ln(c) + c * b + b + b * s + s)
        cost.add("fuser_sum", t * n * s * c, 0)
    elif fuser == "unpool":
        cost.add("unpool_maps", *tokenizer_cost(tokenizer, t, n, c, s, maps_only=True))
        cost.add("unpool_sum", t * n * s * c, 0)
    elif fuser == "reprojection":
        macs, params = mhsa_cost(m, s, c, num_heads, queries=t * n)
        hidden = 4 * c
        cost.add("reprojection_attention", macs, params + 2 * _ln(c))
        cost.add("reprojection_mlp", t * n * 2 * c * hidden, 2 * c * hidden + hidden + c + _ln(c))
    else:
        raise ValueError(f"token_module_cost: unknown `fuser`={fuser!r}.")
    return cost


def module_cost(module=DEFAULT_MODULE, input_shape=PAPER_INPUT, num_tokens=8, tokenizer="1",
                fuser="tokenfuser", num_heads=8, kernel_size=3, temporal_kernel_size=3,
                strides=1, depthwise=False):
    """`Cost` of a `SpaceTimeModule` on an input (T, H, W, C) (batch excluded)."""
    if module not in MODULES:
        raise ValueError(f"module_cost: unknown `module`={module!r}; known: {sorted(MODULES)}.")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"module_cost: unknown `tokenizer`={tokenizer!r}.")
    if fuser not in FUSERS:
        raise ValueError(f"module_cost: unknown `fuser`={fuser!r}.")
    t, h, w, c = (int(v) for v in input_shape)
    h, w = -(-h // strides), -(-w // strides)
    positions = t * h * w
    g = c if depthwise else 1
    cost = Cost()
    for part in MODULES[module]:
        if part == "conv2d":
            k2 = kernel_size * kernel_size
            cost.add("conv2d", positions * k2 * c * c // g, k2 * c * c // g + 2 * c)
        elif part == "conv1d":
            kt = temporal_kernel_size
            cost.add("conv1d", positions * kt * c * c // g, kt * c * c // g)
        elif part in ("joint_mhsa", "spatial_mhsa", "temporal_mhsa"):
            seq = {"joint_mhsa": positions, "spatial_mhsa": h * w, "temporal_mhsa": t}[part]
            macs, params = mhsa_cost(positions, seq, c, num_heads)
            cost.add(part, macs, params + _ln(c))
        elif part == "mlp_mixer":
            ht, hc = t, c
            macs = c * (t * ht + ht * t) + t * (c * hc + hc * c)
            params = (t * ht + ht + ht * t + t) + (c * hc + hc + hc * c + c) + 2 * _ln(c)
            cost.add("mlp_mixer", macs, params)
        else:
            sub = token_module_cost(
                (t, h, w, c), num_tokens, tokenizer,
                "mhsa" if part == "tokenlearner_mhsa" else "vector", fuser, num_heads,
            )
            cost.extend("", sub)
    return cost


def module_gflops(module=DEFAULT_MODULE, input_shape=PAPER_INPUT, num_tokens=8,
                  flops_per_mac=1, **kwargs):
    """GFLOPs of one module (GMACs by default; `flops_per_mac=2` for the convention of
    the paper's Tables 12-13). `kwargs` as `module_cost`."""
    cost = module_cost(module, input_shape, num_tokens=num_tokens, **kwargs)
    return cost.macs * flops_per_mac / 1e9


def module_params(module=DEFAULT_MODULE, input_shape=PAPER_INPUT, num_tokens=8, **kwargs):
    """Trainable parameters of one module."""
    return module_cost(module, input_shape, num_tokens=num_tokens, **kwargs).params


# ----------------------------------------------------------------------------------------
# Whole network.


def _bn(c):
    return 2 * c


def unit_cost(in_shape, filters, inner, strides, module, r):
    """`X2Plus1DUnit` on `in_shape` = (T, H, W, C_in)."""
    t, h, w, cin = in_shape
    ho, wo = -(-h // strides), -(-w // strides)
    cost = Cost()
    cost.add("conv_a", t * h * w * cin * inner, cin * inner + _bn(inner))
    tokens = module != "conv2d_conv1d"
    sub = module_cost(
        module, (t, h, w, inner),
        num_tokens=(r.num_tokens or 8) if tokens else 8,
        tokenizer=(r.tokenizer or "1") if tokens else "1",
        fuser=r.fuser, num_heads=r.num_heads,
        temporal_kernel_size=r.temporal_kernel_size, strides=strides, depthwise=r.depthwise,
    )
    cost.extend("module_", sub)
    cost.add("norm_b", 0, _bn(inner))
    cost.add("conv_c", t * ho * wo * inner * filters, inner * filters + _bn(filters))
    if cin != filters or strides > 1:
        cost.add("shortcut", t * ho * wo * cin * filters, cin * filters + _bn(filters))
    return cost, (t, ho, wo, filters)


def resolved_cost(r):
    """`Cost` of a network from its resolved arguments (`X2Plus1D.resolved`)."""
    t = r.num_frames
    h, w = r.grid()
    cost = Cost()
    g = r.stem_width if r.depthwise else 1
    cost.add("stem", t * h * w * (9 * 3 * r.stem_width
                                  + r.stem_temporal_kernel_size * r.stem_width * r.stem_width // g),
             9 * 3 * r.stem_width + r.stem_temporal_kernel_size * r.stem_width * r.stem_width // g
             + _bn(r.stem_width))
    shape = (t, h, w, r.stem_width)
    for stage, (width, depth, inner) in enumerate(zip(r.widths, r.depths, r.inner_widths)):
        module = r.stage_module(stage)
        for j in range(depth):
            unit, shape = unit_cost(shape, width, inner, 2 if j == 0 else 1, module, r)
            cost.extend(f"res{stage + 2}_", unit)
    t, h, w, c = shape
    cost.add("head_conv", t * h * w * c * r.head_width, c * r.head_width + _bn(r.head_width))
    cost.add("fc", r.head_width * r.fc_width, r.head_width * r.fc_width)
    if r.include_top:
        cost.add("head", r.fc_width * r.num_classes, r.fc_width * r.num_classes + r.num_classes)
    return cost


def x2plus1d_cost(model_or_name="x2plus1d_m", **kwargs):
    """`Cost` of an `X2Plus1D` model, or of a registered name with keyword arguments
    (nothing is built)."""
    from tl_keras.models import x2plus1d as x2p  # noqa: PLC0415 (models import layers)

    if hasattr(model_or_name, "resolved"):
        return resolved_cost(model_or_name.resolved)
    from tl_keras.models.registry import model_arguments  # noqa: PLC0415

    args = model_arguments(model_or_name, **kwargs)
    args.pop("name", None)
    defaults = dict(
        num_classes=157, module=DEFAULT_MODULE, tokenlearner=8, fuser="tokenfuser",
        num_heads=8, temporal_kernel_size=3, stem_temporal_kernel_size=5, depthwise=False,
        dropout_rate=0.5, module_dropout_rate=0.0, include_top=True,
    )
    defaults.update(args)
    return resolved_cost(x2p.resolve_arguments(**defaults))


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


if __name__ == "__main__":
    print(module_table_markdown())
    print()
    print(network_table_markdown())
