"""Vision Transformer (Dosovitskiy et al. 2021) with TokenLearner (paper §3), and the
transformer trunk it shares with ViViT (`tl_keras.models.vivit`).

Layer names of the Keras functional model (checkpoint names in `tl_keras.convert`):
`embedding` (PatchEmbedding), `cls` (ClassToken, with `pooling="token"`),
`posembed_input`, `encoderblock_{i}`, `tokenlearner_{k}`, `tokenfuser_{k}`,
`encoder_norm`, `pool`, `pre_logits` (with `representation_size`), `head`.
"""

import dataclasses
from typing import Optional

import keras
import numpy as np

from tl_keras.layers.embeddings import (
    ClassToken,
    PatchEmbedding,
    PositionEmbedding,
    TokenPooling,
    resize_position_embedding,
    tile_position_embedding,
)
from tl_keras.layers.transformer import build_encoder, check_gelu, check_tokenlearner
from tl_keras.models.base import Checks, FamilyModel, Resolved, constructor_arguments
from tl_keras.models.registry import create_model, register_family, register_model
from tl_keras.models.specs import MODEL_SPECS, TL, as_tl

_B16 = MODEL_SPECS["vit_b16"]  # the constructor's size defaults


@dataclasses.dataclass(frozen=True)
class TransformerArguments(Resolved):
    """Validated ViT / ViViT arguments plus derived shapes (frames = tubelets for video)."""

    image_size: tuple
    patch_size: tuple
    grid: tuple  # (h, w) patches per frame
    frames: Optional[int]  # T' = num_frames / tubelet_size (video), None for images
    num_frames: Optional[int]
    tubelet_size: Optional[int]
    hidden_dim: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    num_classes: Optional[int]
    include_top: bool
    pooling: str
    dropout_rate: float
    attention_dropout_rate: float
    drop_path_rate: float
    representation_size: Optional[int]
    tokenlearner: Optional[TL]
    extra_layers: int
    fuser_mix_tokens_over_time: bool
    gelu: str  # "tanh" or "exact": the GELU form of the encoder blocks' MLPs

    @property
    def positions(self):
        """Patch tokens of one frame."""
        return self.grid[0] * self.grid[1]

    @property
    def num_patches(self):
        """Patch tokens of the whole input (all frames), without the class token."""
        return self.positions * (self.frames or 1)

    @property
    def num_prefix_tokens(self):
        return 1 if self.pooling == "token" else 0

    @property
    def kernel_volume(self):
        """Inputs of one patch: `ph * pw * 3` (video: times the tubelet length)."""
        return self.patch_size[0] * self.patch_size[1] * 3 * (self.tubelet_size or 1)


def resolve_transformer(
    family,
    *,
    image_size,
    patch_size,
    hidden_dim,
    num_layers,
    num_heads,
    mlp_dim,
    num_classes,
    include_top,
    pooling,
    dropout_rate,
    attention_dropout_rate,
    drop_path_rate,
    representation_size,
    tokenlearner,
    extra_layers,
    num_frames=None,
    tubelet_size=None,
    fuser_mix_tokens_over_time=True,
    gelu="tanh",
):
    """Checks the arguments of a ViT (`family="vit"`) or ViViT (`"vivit"`) and derives
    the token grid."""
    owner = {"vit": "ViT", "vivit": "ViViT"}[family]
    check = Checks(owner)
    image_size = check.pair(image_size, "image_size")
    patch_size = check.pair(patch_size, "patch_size")
    for axis, size, patch in zip(("height", "width"), image_size, patch_size):
        if size % patch:
            check.fail(
                f"`image_size` {axis} {size} is not divisible by the `patch_size` {patch}."
            )
    grid = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
    frames = None
    if family == "vivit":
        check.positive_int(num_frames, "num_frames")
        check.positive_int(tubelet_size, "tubelet_size")
        if num_frames % tubelet_size:
            check.fail(
                f"`num_frames`={num_frames} is not divisible by `tubelet_size`={tubelet_size}."
            )
        frames = num_frames // tubelet_size
    for name, value in (
        ("hidden_dim", hidden_dim),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("mlp_dim", mlp_dim),
    ):
        check.positive_int(value, name)
    if hidden_dim % num_heads:
        check.fail(f"`hidden_dim`={hidden_dim} is not divisible by `num_heads`={num_heads}.")
    check.boolean(include_top, "include_top")
    if include_top:
        check.positive_int(num_classes, "num_classes")
    if representation_size is not None:
        check.positive_int(representation_size, "representation_size")
    for name, value in (
        ("dropout_rate", dropout_rate),
        ("attention_dropout_rate", attention_dropout_rate),
        ("drop_path_rate", drop_path_rate),
    ):
        check.rate(value, name)
    tl = as_tl(tokenlearner, owner=f"{owner}: `tokenlearner`")
    check_tokenlearner(tl, num_layers, extra_layers, owner=owner)
    if pooling is None:
        pooling = "gap" if tl is not None else "token"
    if pooling not in ("gap", "token"):
        check.fail(f"`pooling` must be 'gap' or 'token', got {pooling!r}.")
    if pooling == "token" and tl is not None:
        check.fail(
            "`pooling='token'` needs a class token, which a TokenLearner would pool away; "
            "use `pooling='gap'` (the reference) with `tokenlearner`."
        )
    check.boolean(fuser_mix_tokens_over_time, "fuser_mix_tokens_over_time")
    check_gelu(gelu, owner)
    return TransformerArguments(
        family=family,
        image_size=image_size,
        patch_size=patch_size,
        grid=grid,
        frames=frames,
        num_frames=num_frames,
        tubelet_size=tubelet_size,
        hidden_dim=hidden_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        num_classes=num_classes if include_top else None,
        include_top=include_top,
        pooling=pooling,
        dropout_rate=dropout_rate,
        attention_dropout_rate=attention_dropout_rate,
        drop_path_rate=drop_path_rate,
        representation_size=representation_size,
        tokenlearner=tl,
        extra_layers=extra_layers,
        fuser_mix_tokens_over_time=fuser_mix_tokens_over_time,
        gelu=gelu,
    )


def build_trunk(x, r):
    """Patch tokens `[B, N, C]` -> class token, position embedding, dropout, encoder,
    pooling, pre-logits and head. Returns the model output."""
    if r.num_prefix_tokens:
        x = ClassToken(name="cls")(x)  # [B, 1+N, C]
    x = PositionEmbedding(name="posembed_input")(x)
    x = keras.layers.Dropout(r.dropout_rate, name="posembed_dropout")(x)
    x = build_encoder(
        x,
        num_layers=r.num_layers,
        num_heads=r.num_heads,
        mlp_dim=r.mlp_dim,
        dropout_rate=r.dropout_rate,
        attention_dropout_rate=r.attention_dropout_rate,
        drop_path_rate=r.drop_path_rate,
        tokenlearner=r.tokenlearner,
        extra_layers=r.extra_layers,
        num_frames=r.frames,
        grid=r.grid,
        fuser_mix_tokens_over_time=r.fuser_mix_tokens_over_time,
        gelu=r.gelu,
    )  # [B, N', C]
    x = TokenPooling(r.pooling, name="pool")(x)  # [B, C]
    if r.representation_size is not None:
        x = keras.layers.Dense(r.representation_size, activation="tanh", name="pre_logits")(x)
    if r.include_top:
        # Zero kernel as the reference `output_projection`; float32 logits under mixed
        # precision.
        x = keras.layers.Dense(
            r.num_classes,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype="float32",
            name="head",
        )(x)
    return x


def adapt_position_embedding(posemb, source_prefix, r):
    """A position embedding `[1, P + n, C]` (P = `source_prefix` class-token rows, n
    patch rows of another grid or of one frame) -> the model's `[1, P' + T'*h*w, C]`:
    class-token rows kept or dropped, the grid resized (bilinear) to `r.grid` and tiled
    over the `r.frames` token frames. None when the model needs a class-token row the
    source lacks."""
    if r.num_prefix_tokens and not source_prefix:
        return None
    prefix = posemb[:, :source_prefix][:, : r.num_prefix_tokens]
    grid = posemb[:, source_prefix:]
    frames = r.frames or 1
    if grid.shape[1] != frames * r.positions:
        if grid.shape[1] == r.positions:
            grid = tile_position_embedding(grid, frames)
        elif frames > 1 and grid.shape[1] % frames == 0 and _is_square(grid.shape[1] // frames):
            # A video embedding on another grid: resize every frame.
            n = grid.shape[1] // frames
            grid = np.concatenate(
                [resize_position_embedding(grid[:, t * n:(t + 1) * n], r.grid)
                 for t in range(frames)], axis=1)
        elif _is_square(grid.shape[1]):
            grid = tile_position_embedding(resize_position_embedding(grid, r.grid), frames)
    return np.concatenate([prefix, grid], axis=1)


def _is_square(n):
    side = int(round(np.sqrt(n)))
    return side * side == n


class TransformerModel(FamilyModel):
    """Base of ViT / ViViT (`model.resolved` is a `TransformerArguments`)."""


@register_family("vit")
@keras.saving.register_keras_serializable(package="tl_keras")
class ViT(TransformerModel):
    """ViT, optionally with TokenLearner / TokenFuser, as a Keras functional model.

    Args:
        image_size: int or `(H, W)`, divisible by the patch (non-square allowed).
        patch_size: int or `(ph, pw)`.
        hidden_dim, num_layers, num_heads, mlp_dim: encoder size (defaults: ViT-B/16 of
            `MODEL_SPECS`).
        num_classes: classes of the head (`include_top=True`).
        include_top: add the head; otherwise the output is the pooled (pre-logits)
            feature `[B, C]`.
        pooling: `"token"` (class token) or `"gap"` (mean of the final tokens); default
            `"token"` without TokenLearner, `"gap"` with it (the reference).
        dropout_rate: dropout after the position embedding, in the blocks and in the
            TokenLearner/TokenFuser MLPs.
        attention_dropout_rate: dropout on the attention weights.
        drop_path_rate: stochastic depth of the last block (linear from 0).
        representation_size: width of the `Dense + tanh` pre-logits layer, or None.
        tokenlearner: `tl_keras.TL(num_tokens, at, fuser=False, version="1.1")`, its
            config dict or a string like `"8@6+fuser"`; None = plain ViT. `fuser`:
            False (model "a"), True / `"tokenfuser"` (model "b"), or the Fig. 7
            alternatives `"unpool"` / `"reprojection"` (`"8@6+unpool"`).
        extra_layers: blocks added after the TokenLearner (the paper's "24+11", Table 2).
        gelu: GELU form of the encoder MLPs: `"tanh"` (the approximation of the JAX ViT
            reference, default) or `"exact"` (erf; timm and keras-hub ViTs use it, so
            their weights need it for the same logits).
        name: model name.
        **kwargs: `trainable` (the one `keras.Model` argument passed on);
            `weights=PATH_OR_MODEL` to start from (any ViT checkpoint layout, a tl_keras
            `.keras` file or model: `tl_keras.convert.load_pretrained`; report in
            `model.weights_report`, docs/weights.md) and `weights_kernel_init` (ViViT:
            `"central_frame"` / `"average"`); any other keyword raises
            `UnknownArgumentError` naming it and the closest valid names.

    Input `[B, H, W, 3]` (`"images"`); output logits `[B, num_classes]` in float32.
    Every argument is checked before any weight is made (ValueError naming it).
    """

    family = "vit"

    def __init__(
        self,
        image_size=_B16["image_size"],
        patch_size=_B16["patch_size"],
        hidden_dim=_B16["hidden_dim"],
        num_layers=_B16["num_layers"],
        num_heads=_B16["num_heads"],
        mlp_dim=_B16["mlp_dim"],
        num_classes=1000,
        include_top=True,
        pooling=None,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        representation_size=None,
        tokenlearner=None,
        extra_layers=0,
        gelu="tanh",
        name=None,
        **kwargs,
    ):
        super().__init__(constructor_arguments(locals()), name=name, **kwargs)

    @classmethod
    def resolve(cls, **arguments):
        return resolve_transformer("vit", **arguments)

    @classmethod
    def build_graph(cls, r):
        inputs = keras.Input(shape=r.image_size + (3,), name="images")
        x = PatchEmbedding(r.hidden_dim, r.patch_size, name="embedding")(inputs)  # [B, N, C]
        return inputs, build_trunk(x, r)


@register_model
def vit_ti16(**kwargs):
    """ViT-Ti/16 (192 wide, 12 layers, 3 heads)."""
    return create_model("vit_ti16", **kwargs)


@register_model
def vit_s16(**kwargs):
    """ViT-S/16 (384 wide, 12 layers, 6 heads)."""
    return create_model("vit_s16", **kwargs)


@register_model
def vit_s32(**kwargs):
    """ViT-S/32."""
    return create_model("vit_s32", **kwargs)


@register_model
def vit_b16(**kwargs):
    """ViT-B/16 (768 wide, 12 layers, 12 heads)."""
    return create_model("vit_b16", **kwargs)


@register_model
def vit_b32(**kwargs):
    """ViT-B/32."""
    return create_model("vit_b32", **kwargs)


@register_model
def vit_l16(**kwargs):
    """ViT-L/16 (1024 wide, 24 layers, 16 heads)."""
    return create_model("vit_l16", **kwargs)


@register_model
def vit_l14(**kwargs):
    """ViT-L/14."""
    return create_model("vit_l14", **kwargs)


@register_model
def vit_l10(**kwargs):
    """ViT-L/10 (default 220 px = 22x22 patches)."""
    return create_model("vit_l10", **kwargs)


@register_model
def vit_l8(**kwargs):
    """ViT-L/8."""
    return create_model("vit_l8", **kwargs)


@register_model
def vit_h14(**kwargs):
    """ViT-H/14 (1280 wide, 32 layers, 16 heads)."""
    return create_model("vit_h14", **kwargs)
