"""X(2+1)D-M with the bottleneck TokenLearner module (paper §6, Fig. 9).

X3D-M (Feichtenhofer 2020) with every 3-D convolution factorised into a 2-D spatial and
a 1-D temporal convolution, no squeeze-excitation, no swish, batch norm (paper §6.1):

| stage | units | width | inner width | spatial stride |
| --- | --- | --- | --- | --- |
| stem | 3x3 conv (stride 2) + 5-tap temporal conv | 24 | | 2 |
| res2 | 3 | 24 | 54 | 2 |
| res3 | 5 | 48 | 108 | 2 |
| res4 | 11 | 96 | 216 | 2 |
| res5 | 7 | 192 | 432 | 2 |
| head | 1x1x1 conv 432, global average pool, FC 2048 + ReLU, dropout, classifier | | | |

At 224 px res5 is 7x7 per frame, at 256 px 8x8. In res5 the module slot of every unit
(`module`, default `"conv2d_tokenlearner"`: 3x3 Conv2D, TokenLearner with S tokens per
frame, VectorAttention over the `T*S` tokens, TokenFuser) replaces the plain
`"conv2d_conv1d"` of the other stages; `module="conv2d_conv1d"` is the plain backbone.
The convolutions inside the units are full (not channel-wise) by default: that is what
the paper's module sizes (Table 13: Conv2D + Conv1D = 2.24M parameters at 432 channels)
and its backbone GFLOPs (Table 11) correspond to; `depthwise=True` gives X3D's
channel-wise convolutions.

The output is logits (float32 under mixed precision); the sigmoid of multi-label
Charades is the loss's job.

Layer names: `stem_conv_xy`, `stem_conv_t`, `stem_norm`, `res{2..5}_unit{j}`
(`X2Plus1DUnit`), `head_conv`, `head_norm`, `pool`, `fc`, `fc_dropout`, `head`.
"""

import dataclasses
from typing import Optional

import keras

from tl_keras.layers.baselines import FUSERS, TOKENIZERS
from tl_keras.layers.conv2plus1d import (
    BN_EPSILON,
    BN_MOMENTUM,
    DEFAULT_MODULE,
    MODULES,
    X2Plus1DUnit,
    _conv_init,
)
from tl_keras.models.registry import create_model, register_family, register_model
from tl_keras.models.specs import MODEL_SPECS, TL, as_tl

#: X3D-M sizes: the defaults of `x2plus1d_m` (the entry of the one size table).
X2PLUS1D_M = MODEL_SPECS["x2plus1d_m"]

OWNER = "X2Plus1D"


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{OWNER}: `{name}` must be a positive integer, got {value!r}.")
    return value


def _int_tuple(value, name, length=None):
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{OWNER}: `{name}` must be a tuple of positive integers, got {value!r}.")
    value = tuple(_positive_int(v, name) for v in value)
    if length is not None and len(value) != length:
        raise ValueError(f"{OWNER}: `{name}` must have {length} entries, got {value!r}.")
    return value


def as_tokenlearner(value):
    """`tokenlearner` argument -> `(num_tokens, version)` or None.

    An int S means S tokens per frame with the paper's §6.1 token learner (version
    `"1"`: alpha from one conv); a `TL` (or its config dict, or a string such as
    `"8@0+v1"`) gives its `num_tokens` and `version` (`at` and `fuser` have no meaning
    here: the module placement is `module`).
    """
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _positive_int(value, "tokenlearner"), "1"
    if isinstance(value, dict):
        # Read directly, so that every token learner of `TOKENIZERS` is accepted even
        # where the TL spec's own list of versions is shorter.
        unknown = sorted(set(value) - {"num_tokens", "at", "fuser", "version"})
        if unknown or "num_tokens" not in value:
            raise ValueError(
                f"{OWNER}: `tokenlearner` dict needs `num_tokens` (and optionally "
                f"`version`, `at`, `fuser`); got {value!r}."
            )
        num_tokens, version = value["num_tokens"], str(value.get("version", "1.1"))
        _positive_int(num_tokens, "tokenlearner")
    else:
        tl = as_tl(value, owner=f"{OWNER}: `tokenlearner`")
        num_tokens, version = tl.num_tokens, tl.version
    if version not in TOKENIZERS:
        raise ValueError(
            f"{OWNER}: `tokenlearner.version`={version!r} is not a token learner; "
            f"known: {sorted(TOKENIZERS)}."
        )
    return num_tokens, version


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Validated arguments and the derived shapes (what the model and the FLOP count
    use)."""

    num_classes: Optional[int]
    include_top: bool
    num_frames: int
    image_size: tuple
    stem_width: int
    widths: tuple
    depths: tuple
    expansion: float
    head_width: int
    fc_width: int
    module: str
    num_tokens: Optional[int]
    tokenizer: Optional[str]
    fuser: str
    num_heads: int
    temporal_kernel_size: int
    stem_temporal_kernel_size: int
    depthwise: bool
    dropout_rate: float
    module_dropout_rate: float

    @property
    def inner_widths(self):
        return tuple(int(w * self.expansion) for w in self.widths)

    def stage_module(self, stage):
        """Module slot of the units of stage `stage` (0-based): the last gets `module`."""
        return self.module if stage == len(self.widths) - 1 else "conv2d_conv1d"

    def grid(self, stage=None):
        """(h, w) of the stem output (stage None) or of stage `stage`'s output."""
        h, w = self.image_size
        h, w = -(-h // 2), -(-w // 2)
        if stage is not None:
            for _ in range(stage + 1):
                h, w = -(-h // 2), -(-w // 2)
        return h, w


def resolve_arguments(
    *,
    num_classes,
    include_top,
    num_frames,
    image_size,
    stem_width,
    widths,
    depths,
    expansion,
    head_width,
    fc_width,
    module,
    tokenlearner,
    fuser,
    num_heads,
    temporal_kernel_size,
    stem_temporal_kernel_size,
    depthwise,
    dropout_rate,
    module_dropout_rate,
):
    """Checks every argument (ValueError naming it); builds nothing."""
    if not isinstance(include_top, bool):
        raise ValueError(f"{OWNER}: `include_top` must be a bool, got {include_top!r}.")
    if include_top:
        _positive_int(num_classes, "num_classes")
    _positive_int(num_frames, "num_frames")
    if isinstance(image_size, (tuple, list)):
        image_size = _int_tuple(image_size, "image_size", 2)
    else:
        image_size = (_positive_int(image_size, "image_size"),) * 2
    _positive_int(stem_width, "stem_width")
    widths = _int_tuple(widths, "widths")
    depths = _int_tuple(depths, "depths")
    if len(widths) != len(depths):
        raise ValueError(
            f"{OWNER}: `widths` {widths} and `depths` {depths} must have the same length."
        )
    if isinstance(expansion, bool) or not isinstance(expansion, (int, float)) or expansion <= 0:
        raise ValueError(f"{OWNER}: `expansion` must be a number > 0, got {expansion!r}.")
    if any(int(w * expansion) < 1 for w in widths):
        raise ValueError(f"{OWNER}: `expansion`={expansion} gives an empty inner width.")
    _positive_int(head_width, "head_width")
    _positive_int(fc_width, "fc_width")
    if module not in MODULES:
        raise ValueError(f"{OWNER}: unknown `module`={module!r}; known: {sorted(MODULES)}.")
    tl = as_tokenlearner(tokenlearner)
    uses_tokens = "tokenlearner" in module
    if uses_tokens and tl is None:
        raise ValueError(
            f"{OWNER}: `module`={module!r} needs `tokenlearner` (e.g. 8 or TL(8, at=0, "
            "version='1'))."
        )
    if fuser not in FUSERS:
        raise ValueError(f"{OWNER}: unknown `fuser`={fuser!r}; known: {sorted(FUSERS)}.")
    if uses_tokens and fuser == "unpool" and tl[1] == "pool_mlp":
        raise ValueError(
            f"{OWNER}: `fuser='unpool'` needs token maps; version 'pool_mlp' has none."
        )
    _positive_int(num_heads, "num_heads")
    _positive_int(temporal_kernel_size, "temporal_kernel_size")
    _positive_int(stem_temporal_kernel_size, "stem_temporal_kernel_size")
    if not isinstance(depthwise, bool):
        raise ValueError(f"{OWNER}: `depthwise` must be a bool, got {depthwise!r}.")
    rates = (("dropout_rate", dropout_rate), ("module_dropout_rate", module_dropout_rate))
    for name, value in rates:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{OWNER}: `{name}` must be a float in [0, 1), got {value!r}.")
    num_tokens, version = tl if (tl is not None and uses_tokens) else (None, None)
    return Resolved(
        num_classes=num_classes if include_top else None,
        include_top=include_top,
        num_frames=num_frames,
        image_size=image_size,
        stem_width=stem_width,
        widths=widths,
        depths=depths,
        expansion=float(expansion),
        head_width=head_width,
        fc_width=fc_width,
        module=module,
        num_tokens=num_tokens,
        tokenizer=version,
        fuser=fuser,
        num_heads=num_heads,
        temporal_kernel_size=temporal_kernel_size,
        stem_temporal_kernel_size=stem_temporal_kernel_size,
        depthwise=depthwise,
        dropout_rate=dropout_rate,
        module_dropout_rate=module_dropout_rate,
    )


def _bn(name):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def build_x2plus1d(inputs, r):
    """Applies the network to `inputs` `[B, T, H, W, 3]`; returns logits (or the
    `fc_width` features without the top)."""
    stem_groups = r.stem_width if r.depthwise else 1
    x = keras.layers.Conv3D(
        r.stem_width, (1, 3, 3), strides=(1, 2, 2), padding="same", use_bias=False,
        kernel_initializer=_conv_init(), name="stem_conv_xy",
    )(inputs)  # [B, T, H/2, W/2, 24]
    x = keras.layers.Conv3D(
        r.stem_width, (r.stem_temporal_kernel_size, 1, 1), padding="same", use_bias=False,
        groups=stem_groups, kernel_initializer=_conv_init(), name="stem_conv_t",
    )(x)
    x = keras.layers.ReLU(name="stem_relu")(_bn("stem_norm")(x))
    for stage, (width, depth, inner) in enumerate(zip(r.widths, r.depths, r.inner_widths)):
        module = r.stage_module(stage)
        tokens = module != "conv2d_conv1d"
        for j in range(depth):
            x = X2Plus1DUnit(
                width,
                inner,
                strides=2 if j == 0 else 1,
                module=module,
                num_tokens=r.num_tokens if (tokens and r.num_tokens) else 8,
                tokenizer=r.tokenizer if (tokens and r.tokenizer) else "1",
                fuser=r.fuser,
                num_heads=r.num_heads,
                temporal_kernel_size=r.temporal_kernel_size,
                depthwise=r.depthwise,
                dropout_rate=r.module_dropout_rate if tokens else 0.0,
                name=f"res{stage + 2}_unit{j}",
            )(x)  # [B, T, h, w, width]
    x = keras.layers.Conv3D(
        r.head_width, 1, use_bias=False, kernel_initializer=_conv_init(), name="head_conv"
    )(x)
    x = keras.layers.ReLU(name="head_relu")(_bn("head_norm")(x))
    x = keras.layers.GlobalAveragePooling3D(name="pool")(x)  # [B, head_width]
    x = keras.layers.Dense(r.fc_width, use_bias=False, activation="relu", name="fc")(x)
    if not r.include_top:
        return x
    x = keras.layers.Dropout(r.dropout_rate, name="fc_dropout")(x)
    return keras.layers.Dense(
        r.num_classes,
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
        dtype="float32",
        name="head",
    )(x)  # [B, num_classes] logits in float32


@register_family("x2plus1d")
@keras.saving.register_keras_serializable(package="tl_keras")
class X2Plus1D(keras.Model):
    """X(2+1)D with a selectable module in its last stage, as a Keras functional model.

    Args:
        num_classes: classes of the head (Charades: 157, multi-label; AViD: 887).
        num_frames: T of the input clip (paper: 64).
        image_size: int or `(H, W)` (paper: 224 train, 256 test).
        stem_width, widths, depths, expansion, head_width, fc_width: network size
            (defaults X3D-M: 24, (24, 48, 96, 192), (3, 5, 11, 7), 2.25, 432, 2048).
        module: the module of every unit of the last stage, a name of
            `tl_keras.layers.conv2plus1d.MODULES` (default `"conv2d_tokenlearner"`,
            the paper's final model; `"conv2d_conv1d"` = plain backbone).
        tokenlearner: for the TokenLearner modules: S (int, paper's §6.1 token learner)
            or a `tl_keras.TL` whose `num_tokens` and `version` (`"1"`, `"1.1"`,
            `"grid"`, `"pool"`, `"fc"`, `"pool_mlp"`) are used; ignored by the others.
        fuser: `"tokenfuser"`, `"unpool"` or `"reprojection"` (TokenLearner modules).
        num_heads: heads of the MHSA modules (paper: 8).
        temporal_kernel_size: taps of the 1-D temporal convs in the units.
        stem_temporal_kernel_size: taps of the stem's temporal conv (X3D: 5).
        depthwise: channel-wise convs inside the units (X3D) instead of full ones.
        dropout_rate: dropout before the classifier (X3D: 0.5).
        module_dropout_rate: dropout inside the attention / token modules.
        include_top: add the classifier; otherwise output the `fc_width` features.
        name: model name.
        **kwargs: base `keras.Model` arguments (`trainable`).

    Input `"videos"` `[B, T, H, W, 3]`; output logits `[B, num_classes]` (float32).
    Every argument is checked before any weight is made (ValueError naming it).
    """

    def __init__(
        self,
        num_classes=157,
        num_frames=64,
        image_size=224,
        stem_width=24,
        widths=(24, 48, 96, 192),
        depths=(3, 5, 11, 7),
        expansion=2.25,
        head_width=432,
        fc_width=2048,
        module=DEFAULT_MODULE,
        tokenlearner=8,
        fuser="tokenfuser",
        num_heads=8,
        temporal_kernel_size=3,
        stem_temporal_kernel_size=5,
        depthwise=False,
        dropout_rate=0.5,
        module_dropout_rate=0.0,
        include_top=True,
        name=None,
        **kwargs,
    ):
        arguments = dict(
            num_classes=num_classes,
            num_frames=num_frames,
            image_size=image_size,
            stem_width=stem_width,
            widths=widths,
            depths=depths,
            expansion=expansion,
            head_width=head_width,
            fc_width=fc_width,
            module=module,
            tokenlearner=tokenlearner,
            fuser=fuser,
            num_heads=num_heads,
            temporal_kernel_size=temporal_kernel_size,
            stem_temporal_kernel_size=stem_temporal_kernel_size,
            depthwise=depthwise,
            dropout_rate=dropout_rate,
            module_dropout_rate=module_dropout_rate,
            include_top=include_top,
        )
        r = resolve_arguments(**arguments)
        inputs = keras.Input(shape=(r.num_frames,) + r.image_size + (3,), name="videos")
        outputs = build_x2plus1d(inputs, r)
        super().__init__(inputs=inputs, outputs=outputs, name=name or "x2plus1d", **kwargs)
        if isinstance(tokenlearner, TL):
            arguments["tokenlearner"] = tokenlearner.to_config()
        for key in ("widths", "depths", "image_size"):
            if isinstance(arguments[key], list):
                arguments[key] = tuple(arguments[key])
        self._arguments = arguments
        self.resolved = r

    def get_config(self):
        return {**self._arguments, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@register_model
def x2plus1d_m(num_classes=157, **kwargs):
    """X(2+1)D-M (X3D-M sizes, (2+1)D convs) with the bottleneck TokenLearner module in
    res5 (paper §6: Charades 66.3 mAP, AViD 53.8%). Defaults: 64 frames, 224 px,
    `module="conv2d_tokenlearner"`, `tokenlearner=8`; see `X2Plus1D`."""
    return create_model("x2plus1d_m", num_classes=num_classes, **kwargs)
