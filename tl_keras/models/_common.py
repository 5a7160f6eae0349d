"""Argument checking and the parts ViT and ViViT share (stem tail, encoder, head).

`resolve_arguments` validates every argument and derives the shapes, without creating
any weight; the model classes and `tl_keras.flops` both use it.
"""

import dataclasses
from typing import Optional

import keras

from tl_keras.layers.embeddings import ClassToken, PositionEmbedding, TokenPooling
from tl_keras.layers.transformer import build_encoder, check_tokenlearner
from tl_keras.models.specs import TL, as_tl


@dataclasses.dataclass(frozen=True)
class Resolved:
    """Validated arguments plus derived shapes (frames = tubelets for video)."""

    family: str
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

    @property
    def num_patches(self):
        """Patch tokens of the whole input (all frames), without the class token."""
        return self.grid[0] * self.grid[1] * (self.frames or 1)

    @property
    def num_prefix_tokens(self):
        return 1 if self.pooling == "token" else 0


def _positive_int(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: `{name}` must be a positive integer, got {value!r}.")
    return value


def _pair(value, name, owner):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{owner}: `{name}` must be an int or (h, w), got {value!r}.")
        return tuple(_positive_int(v, name, owner) for v in value)
    _positive_int(value, name, owner)
    return (value, value)


def _rate(value, name, owner):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{owner}: `{name}` must be a float in [0, 1), got {value!r}.")
    return value


def resolve_arguments(
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
):
    """Checks every argument (ValueError naming it) and derives the token grid."""
    owner = {"vit": "ViT", "vivit": "ViViT"}[family]
    image_size = _pair(image_size, "image_size", owner)
    patch_size = _pair(patch_size, "patch_size", owner)
    for axis, size, patch in zip(("height", "width"), image_size, patch_size):
        if size % patch:
            raise ValueError(
                f"{owner}: `image_size` {axis} {size} is not divisible by the `patch_size` "
                f"{patch}."
            )
    grid = (image_size[0] // patch_size[0], image_size[1] // patch_size[1])
    frames = None
    if family == "vivit":
        _positive_int(num_frames, "num_frames", owner)
        _positive_int(tubelet_size, "tubelet_size", owner)
        if num_frames % tubelet_size:
            raise ValueError(
                f"{owner}: `num_frames`={num_frames} is not divisible by "
                f"`tubelet_size`={tubelet_size}."
            )
        frames = num_frames // tubelet_size
    for name, value in (
        ("hidden_dim", hidden_dim),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("mlp_dim", mlp_dim),
    ):
        _positive_int(value, name, owner)
    if hidden_dim % num_heads:
        raise ValueError(
            f"{owner}: `hidden_dim`={hidden_dim} is not divisible by `num_heads`={num_heads}."
        )
    if not isinstance(include_top, bool):
        raise ValueError(f"{owner}: `include_top` must be a bool, got {include_top!r}.")
    if include_top:
        _positive_int(num_classes, "num_classes", owner)
    if representation_size is not None:
        _positive_int(representation_size, "representation_size", owner)
    for name, value in (
        ("dropout_rate", dropout_rate),
        ("attention_dropout_rate", attention_dropout_rate),
        ("drop_path_rate", drop_path_rate),
    ):
        _rate(value, name, owner)
    tl = as_tl(tokenlearner, owner=f"{owner}: `tokenlearner`")
    check_tokenlearner(tl, num_layers, extra_layers, owner=owner)
    if pooling is None:
        pooling = "gap" if tl is not None else "token"
    if pooling not in ("gap", "token"):
        raise ValueError(f"{owner}: `pooling` must be 'gap' or 'token', got {pooling!r}.")
    if pooling == "token" and tl is not None:
        raise ValueError(
            f"{owner}: `pooling='token'` needs a class token, which a TokenLearner would "
            "pool away; use `pooling='gap'` (the reference) with `tokenlearner`."
        )
    if not isinstance(fuser_mix_tokens_over_time, bool):
        raise ValueError(
            f"{owner}: `fuser_mix_tokens_over_time` must be a bool, "
            f"got {fuser_mix_tokens_over_time!r}."
        )
    return Resolved(
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


class TransformerModel(keras.Model):
    """Base of ViT / ViViT: a Keras functional model whose `get_config()` is exactly its
    constructor arguments (so `.keras` files reload through `from_config`)."""

    def _set_arguments(self, arguments, resolved):
        self._arguments = dict(arguments)
        if isinstance(self._arguments.get("tokenlearner"), TL):
            self._arguments["tokenlearner"] = self._arguments["tokenlearner"].to_config()
        for key in ("image_size", "patch_size"):
            if isinstance(self._arguments.get(key), list):
                self._arguments[key] = tuple(self._arguments[key])
        self.resolved = resolved

    def get_config(self):
        return {**self._arguments, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
