"""X(2+1)D-M with the bottleneck TokenLearner module (paper §6, Fig. 9).

X3D-M (Feichtenhofer 2020) with every 3-D convolution factorised into a 2-D spatial and
a 1-D temporal convolution, no squeeze-excitation, no swish, batch norm (paper §6.1);
the sizes are the `x2plus1d_m` entry of `MODEL_SPECS`, the defaults of `X2Plus1D`:

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

from tl_keras.layers.tokenizers import FUSERS, TOKENIZERS
from tl_keras.models.base import Checks, FamilyModel, Resolved, constructor_arguments
from tl_keras.models.registry import create_model, register_family, register_model
from tl_keras.models.specs import MODEL_SPECS, as_tl
from tl_keras.models.x2plus1d.layers import (
    DEFAULT_MODULE,
    MODULES,
    X2Plus1DUnit,
    batch_norm,
    conv3d,
)

#: X3D-M sizes: the defaults of `X2Plus1D` and `x2plus1d_m` (the entry of the size table).
X2PLUS1D_M = MODEL_SPECS["x2plus1d_m"]

OWNER = "X2Plus1D"


def as_tokenlearner(value):
    """`tokenlearner` argument -> `(num_tokens, version)` or None.

    An int S means S tokens per frame with the paper's §6.1 token learner (version
    `"1"`: alpha from one conv); a `TL` (or its config dict, or a string such as
    `"8+v1"`) gives its `num_tokens` and `version`. `at` and `fuser` place a
    TokenLearner in a Transformer; here the placement is `module` (res5), so giving
    either is an error rather than being ignored.
    """
    check = Checks(OWNER)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return check.positive_int(value, "tokenlearner"), "1"
    if isinstance(value, dict):
        # Read directly, so that every token learner of `TOKENIZERS` is accepted even
        # where the TL spec's own list of versions is shorter.
        unknown = sorted(set(value) - {"num_tokens", "at", "fuser", "version"})
        if unknown or "num_tokens" not in value:
            check.fail(
                "`tokenlearner` dict needs `num_tokens` (and optionally `version`); "
                f"got {value!r}."
            )
        num_tokens, version = value["num_tokens"], str(value.get("version", "1.1"))
        at, fuser = value.get("at"), value.get("fuser", False)
        check.positive_int(num_tokens, "tokenlearner")
    else:
        tl = as_tl(value, owner=f"{OWNER}: `tokenlearner`")
        num_tokens, version, at, fuser = tl.num_tokens, tl.version, tl.at, tl.fuser
    if at is not None or fuser:
        check.fail(
            f"`tokenlearner`={value!r}: `at` and `fuser` place a TokenLearner in a "
            "Transformer; X(2+1)D's TokenLearner sits in res5's modules (`module`), so "
            f"leave them out, e.g. TL({num_tokens}, version={version!r})."
        )
    if version not in TOKENIZERS:
        check.fail(
            f"`tokenlearner.version`={version!r} is not a token learner; "
            f"known: {sorted(TOKENIZERS)}."
        )
    return num_tokens, version


@dataclasses.dataclass(frozen=True)
class X2Plus1DArguments(Resolved):
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

    def unit_options(self, stage):
        """`X2Plus1DUnit` arguments (besides widths and stride) of the units of `stage`
        (the unit's defaults for what the stage's module does not use); the cost count
        reads the same."""
        module = self.stage_module(stage)
        options = dict(
            module=module,
            fuser=self.fuser,
            num_heads=self.num_heads,
            temporal_kernel_size=self.temporal_kernel_size,
            depthwise=self.depthwise,
        )
        if module != "conv2d_conv1d":
            options["dropout_rate"] = self.module_dropout_rate
            if self.num_tokens is not None:
                options.update(num_tokens=self.num_tokens, tokenizer=self.tokenizer)
        return options

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
    """Checks every argument of `X2Plus1D` (ValueError naming it); builds nothing."""
    check = Checks(OWNER)
    check.boolean(include_top, "include_top")
    if include_top:
        check.positive_int(num_classes, "num_classes")
    check.positive_int(num_frames, "num_frames")
    image_size = check.pair(image_size, "image_size")
    check.positive_int(stem_width, "stem_width")
    widths = check.int_tuple(widths, "widths")
    depths = check.int_tuple(depths, "depths")
    if len(widths) != len(depths):
        check.fail(f"`widths` {widths} and `depths` {depths} must have the same length.")
    check.positive_number(expansion, "expansion")
    if any(int(w * expansion) < 1 for w in widths):
        check.fail(f"`expansion`={expansion} gives an empty inner width.")
    check.positive_int(head_width, "head_width")
    check.positive_int(fc_width, "fc_width")
    check.one_of(module, "module", MODULES)
    tl = as_tokenlearner(tokenlearner)
    uses_tokens = "tokenlearner" in module
    if uses_tokens and tl is None:
        check.fail(
            f"`module`={module!r} needs `tokenlearner` (e.g. 8 or TL(8, version='1'))."
        )
    check.one_of(fuser, "fuser", FUSERS)
    if uses_tokens and fuser == "unpool" and tl[1] == "pool_mlp":
        check.fail("`fuser='unpool'` needs token maps; version 'pool_mlp' has none.")
    check.positive_int(num_heads, "num_heads")
    check.positive_int(temporal_kernel_size, "temporal_kernel_size")
    check.positive_int(stem_temporal_kernel_size, "stem_temporal_kernel_size")
    check.boolean(depthwise, "depthwise")
    check.rate(dropout_rate, "dropout_rate")
    check.rate(module_dropout_rate, "module_dropout_rate")
    num_tokens, version = tl if (tl is not None and uses_tokens) else (None, None)
    return X2Plus1DArguments(
        family="x2plus1d",
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


def build_x2plus1d(inputs, r):
    """Applies the network to `inputs` `[B, T, H, W, 3]`; returns logits (or the
    `fc_width` features without the top)."""
    stem_groups = r.stem_width if r.depthwise else 1
    x = conv3d(r.stem_width, (1, 3, 3), strides=(1, 2, 2), name="stem_conv_xy")(
        inputs
    )  # [B, T, H/2, W/2, stem_width]
    x = conv3d(
        r.stem_width, (r.stem_temporal_kernel_size, 1, 1), groups=stem_groups,
        name="stem_conv_t",
    )(x)
    x = keras.layers.ReLU(name="stem_relu")(batch_norm("stem_norm")(x))
    for stage, (width, depth, inner) in enumerate(zip(r.widths, r.depths, r.inner_widths)):
        for j in range(depth):
            x = X2Plus1DUnit(
                width,
                inner,
                strides=2 if j == 0 else 1,
                name=f"res{stage + 2}_unit{j}",
                **r.unit_options(stage),
            )(x)  # [B, T, h, w, width]
    x = conv3d(r.head_width, (1, 1, 1), name="head_conv")(x)
    x = keras.layers.ReLU(name="head_relu")(batch_norm("head_norm")(x))
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
class X2Plus1D(FamilyModel):
    """X(2+1)D with a selectable module in its last stage, as a Keras functional model.

    Args:
        num_classes: classes of the head (Charades: 157, multi-label; AViD: 887).
        num_frames: T of the input clip (paper: 64).
        image_size: int or `(H, W)` (paper: 224 train, 256 test).
        stem_width, widths, depths, expansion, head_width, fc_width: network size
            (defaults: X3D-M, the `x2plus1d_m` entry of `MODEL_SPECS`).
        module: the module of every unit of the last stage, a name of
            `tl_keras.models.x2plus1d.MODULES` (default `"conv2d_tokenlearner"`,
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
        **kwargs: `trainable` (the one `keras.Model` argument passed on); any other
            keyword raises `UnknownArgumentError` naming it and the closest valid names.

    Input `"videos"` `[B, T, H, W, 3]`; output logits `[B, num_classes]` (float32).
    Every argument is checked before any weight is made (ValueError naming it).
    """

    family = "x2plus1d"

    def __init__(
        self,
        num_classes=157,
        num_frames=X2PLUS1D_M["num_frames"],
        image_size=X2PLUS1D_M["image_size"],
        stem_width=X2PLUS1D_M["stem_width"],
        widths=X2PLUS1D_M["widths"],
        depths=X2PLUS1D_M["depths"],
        expansion=X2PLUS1D_M["expansion"],
        head_width=X2PLUS1D_M["head_width"],
        fc_width=X2PLUS1D_M["fc_width"],
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
        super().__init__(constructor_arguments(locals()), name=name, **kwargs)

    @classmethod
    def resolve(cls, **arguments):
        return resolve_arguments(**arguments)

    @classmethod
    def build_graph(cls, r):
        inputs = keras.Input(shape=(r.num_frames,) + r.image_size + (3,), name="videos")
        return inputs, build_x2plus1d(inputs, r)


@register_model
def x2plus1d_m(num_classes=X2Plus1D.defaults()["num_classes"], **kwargs):
    """X(2+1)D-M (X3D-M sizes, (2+1)D convs) with the bottleneck TokenLearner module in
    res5 (paper §6: Charades 66.3 mAP, AViD 53.8%, Tables 10-11). Defaults: those of
    `X2Plus1D` (64 frames, 224 px, `module="conv2d_tokenlearner"`, `tokenlearner=8`)."""
    return create_model("x2plus1d_m", num_classes=num_classes, **kwargs)


@register_model
def x2plus1d_tiny(num_classes=X2Plus1D.defaults()["num_classes"], **kwargs):
    """X(2+1)D-M scaled down for `--runlocal` (`experiments/charades.py`, `avid.py`) and
    tests: the same units, stem, head and module slot, with two stages (widths 24 / 48,
    2 units each, inner widths 2x) instead of four, 8 frames of 32 px, so that the last
    stage, which holds `module` (default `"conv2d_tokenlearner"`), is 4x4 per frame."""
    return create_model("x2plus1d_tiny", num_classes=num_classes, **kwargs)
