"""The per-layer cost formulas every family's count uses: multiply-accumulates (MACs)
and trainable parameters of one example through each tl_keras layer.

Convention (the paper's "GFLOPs" are MACs, §3 and Tables 2-7; its X(2+1)D module
tables 12-13 are 2 x MACs, see BENCHMARKS.md): every matmul, convolution and attention
product is counted (`QK^T` and `AV` of MHSA; `q * k` and `a * v` of vector attention;
the weighted sums of token learners and fusers); normalisations, activations, softmax,
pooling, biases and additions are not. Parameters are the trainable ones, exactly what
the Keras layers hold (batch-norm moving statistics excluded; checked by the tests).

Shapes: `frames` T (1 for images), `positions` N per frame, `channels` C, `num_tokens`
S per frame. Functions return `(macs, params)` or, with a breakdown, a `Cost`.
"""

import dataclasses
import inspect

from tl_keras.layers.baselines import ReprojectionFuser
from tl_keras.layers.token_learner import TokenFuser, TokenLearner, TokenLearnerV1


def _default(cls, argument):
    return inspect.signature(cls.__init__).parameters[argument].default


#: Layer defaults the formulas assume unless told otherwise (read from the layers).
TL_BOTTLENECK = _default(TokenLearner, "bottleneck_dim")  # TokenLearner v1.1 MLP width
V1_CONV_LAYERS = _default(TokenLearnerV1, "num_conv_layers")
FUSER_BOTTLENECK = _default(TokenFuser, "bottleneck_dim")
REPROJECTION_MLP_RATIO = _default(ReprojectionFuser, "mlp_ratio")


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
        """Adds every part of `other`, named `prefix + part`."""
        for name, (macs, params) in other.parts.items():
            self.add(f"{prefix}{name}", macs, params)
        return self

    @property
    def gmacs(self):
        return self.macs / 1e9


def norm_params(channels):
    """LayerNorm / BatchNorm: scale and offset (no MACs counted)."""
    return 2 * channels


def dense_cost(units_in, units_out, positions=1, use_bias=True):
    """A Dense layer applied at `positions` tokens."""
    return positions * units_in * units_out, units_in * units_out + (units_out if use_bias else 0)


def conv_cost(positions, kernel_volume, in_channels, out_channels, groups=1, use_bias=False):
    """A convolution with `positions` outputs and `kernel_volume` taps (a patchifying
    embedding: kernel volume `ph * pw * t` on 3 input channels)."""
    weights = kernel_volume * (in_channels // groups) * out_channels
    return positions * weights, weights + (out_channels if use_bias else 0)


def mhsa_cost(tokens, seq_len, channels, num_heads=1, queries=None):
    """Multi-head attention with q/k/v/out projections (biases): `tokens` key/value
    tokens in sequences of `seq_len` keys; queries = keys unless `queries` (the total
    query tokens) is given. Head width `max(C // num_heads, 1)` (Keras
    `MultiHeadAttention` as the X(2+1)D modules build it; with C divisible by the heads,
    as in a `TransformerBlock`, the count does not depend on `num_heads`)."""
    c, hk = channels, num_heads * max(channels // num_heads, 1)
    queries = tokens if queries is None else queries
    macs = queries * c * hk + 2 * tokens * c * hk + queries * hk * c  # q, k, v, out
    macs += 2 * queries * seq_len * hk  # QK^T and AV
    params = 3 * (c * hk + hk) + hk * c + c
    return macs, params


def block_cost(num_tokens, channels, mlp_dim):
    """One pre-LN transformer block (`TransformerBlock`) on N tokens:
    `4 N C^2 + 2 N^2 C + 2 N C M` MACs."""
    n, c = num_tokens, channels
    attention = mhsa_cost(n, n, c)
    mlp_0 = dense_cost(c, mlp_dim, n)
    mlp_1 = dense_cost(mlp_dim, c, n)
    macs = attention[0] + mlp_0[0] + mlp_1[0]
    return macs, 2 * norm_params(c) + attention[1] + mlp_0[1] + mlp_1[1]


def vector_attention_cost(tokens, channels):
    """`VectorAttention` on `tokens` tokens: q, k, v projections and the per-channel
    `q * k`, `a * v` products (`3 M C^2 + 2 M^2 C`)."""
    m, c = tokens, channels
    return 3 * m * c * c + 2 * m * m * c, 3 * (c * c + c)


def tokenizer_cost(version, frames, positions, channels, num_tokens, *,
                   bottleneck_dim=TL_BOTTLENECK, num_conv_layers=V1_CONV_LAYERS,
                   maps_only=False):
    """A token learner (a `TOKENIZERS` name) on `frames` frames of `positions` positions:

    * `"1.1"` (`TokenLearner`): LN, MLP `C -> bottleneck -> S`, pooling `S N C`;
    * `"1"` (`TokenLearnerV1`, paper Eq. 1): LN, `num_conv_layers` 3x3 convs
      (`C -> S`, then `S -> S`, no bias), pooling;
    * the baselines of `tl_keras.layers.baselines` (paper Table 6, §6.3): `"grid"`
      (fixed masks: pooling only), `"pool"` (max pooling: no MACs), `"fc"` (a learned
      `N -> S` map per frame), `"pool_mlp"` (pooled feature -> MLP -> S tokens).

    `maps_only`: only what computes the maps again (what the unpool fuser re-runs).
    """
    t, n, c, s = frames, positions, channels, num_tokens
    pool = t * s * n * c  # weighted sum over positions
    if version == "1":
        convs = num_conv_layers - 1
        macs = t * (9 * n * c * s + convs * 9 * n * s * s)
        params = 9 * c * s + convs * 9 * s * s + norm_params(c)
    elif version == "1.1":
        b = bottleneck_dim
        macs, params = t * n * (c * b + b * s), norm_params(c) + c * b + b + b * s + s
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


def fuser_cost(kind, frames, positions, channels, num_tokens, *, tokenizer="1.1",
               num_heads=8, bottleneck_dim=FUSER_BOTTLENECK, mix_tokens_over_time=True,
               num_conv_layers=V1_CONV_LAYERS, maps_reused=False):
    """A fuser (a `FUSERS` name) mapping `frames x num_tokens` tokens back onto
    `frames x positions`, as a `Cost`:

    * `"tokenfuser"` (`TokenFuser`, paper Eq. 2): token mixing over all `T*S` tokens
      (`C (TS)^2`; per frame `T C S^2` unless `mix_tokens_over_time`), the beta MLP and
      the `N S C` weighted sum;
    * `"unpool"`: the `tokenizer`'s maps again (not with `maps_reused`: the ViT / ViViT
      encoder takes them from the TokenLearner's own call) and the weighted sum;
    * `"reprojection"`: attention of the positions to the frame's tokens plus an MLP.
    """
    t, n, c, s = frames, positions, channels, num_tokens
    m = t * s if mix_tokens_over_time else s  # tokens one mixing matmul sees
    cost = Cost()
    if kind == "tokenfuser":
        b = bottleneck_dim
        cost.add("fuser_token_mixing", (t * s // m) * m * m * c, m * m + m + 2 * norm_params(c))
        cost.add("fuser_beta_mlp", t * n * (c * b + b * s), norm_params(c) + c * b + b + b * s + s)
        cost.add("fuser_sum", t * n * s * c, 0)
    elif kind == "unpool":
        if not maps_reused:
            maps = tokenizer_cost(tokenizer, t, n, c, s, num_conv_layers=num_conv_layers,
                                  maps_only=True)
            cost.add("unpool_maps", *maps)
        cost.add("unpool_sum", t * n * s * c, 0)
    elif kind == "reprojection":
        macs, params = mhsa_cost(t * s, s, c, num_heads, queries=t * n)
        hidden = max(int(round(REPROJECTION_MLP_RATIO * c)), 1)
        cost.add("reprojection_attention", macs, params + 2 * norm_params(c))
        cost.add("reprojection_mlp", t * n * 2 * c * hidden,
                 2 * c * hidden + hidden + c + norm_params(c))
    else:
        raise ValueError(f"fuser_cost: unknown `kind`={kind!r}.")
    return cost
