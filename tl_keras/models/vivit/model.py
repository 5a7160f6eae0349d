"""ViViT (Arnab et al. 2021), the unfactorised ("joint space-time") model, with
TokenLearner applied per time step (paper §5).

A `[B, T, H, W, 3]` clip becomes `T/t x H/ph x W/pw` tubelet tokens (frame-major), a
learned position embedding is added, and the encoder of `tl_keras.models.vit` runs over
all of them. A TokenLearner turns each of the `T/t` token frames into S tokens
(`T/t * S` in all).

Layer names are those of `tl_keras.models.vit`; the stem is a `TubeletEmbedding`
named `embedding` (Conv3D kernel `[t, ph, pw, 3, C]`).
"""

import keras

from tl_keras.layers.embeddings import TubeletEmbedding
from tl_keras.models.base import constructor_arguments
from tl_keras.models.registry import create_model, register_family, register_model
from tl_keras.models.specs import MODEL_SPECS
from tl_keras.models.vit.model import TransformerModel, build_trunk, resolve_transformer

_B16 = MODEL_SPECS["vivit_b16"]  # the constructor's size defaults


@register_family("vivit")
@keras.saving.register_keras_serializable(package="tl_keras")
class ViViT(TransformerModel):
    """ViViT with optional TokenLearner / TokenFuser, as a Keras functional model.

    Args:
        num_frames: T, frames of the input clip (divisible by `tubelet_size`).
        image_size: int or `(H, W)`, divisible by the patch.
        patch_size: spatial patch, int or `(ph, pw)`.
        tubelet_size: t, frames per tubelet (16x16x2 = `patch_size=16, tubelet_size=2`).
        fuser_mix_tokens_over_time: the TokenFuser's token mixing runs over all
            `T/t * S` tokens of the clip (paper §2.2 on the video's tokens, default) or
            over the S tokens of each frame (Scenic's ViViT; use False to load its
            checkpoints). In an experiment config: `model.fuser_mix_tokens_over_time`.
        gelu: GELU form of the encoder MLPs, `"tanh"` (default) or `"exact"` (as
            `tl_keras.models.ViT`).
        Other arguments: as `tl_keras.models.ViT` (size defaults: ViViT-B/16x2 of
            `MODEL_SPECS`), `weights=` included: an image checkpoint or ViT gets its 2-D
            patch kernel inflated over the tubelet by `weights_kernel_init`
            (`"central_frame"`, default, or `"average"`) and its position embedding
            tiled over time.

    Input `[B, T, H, W, 3]` (`"videos"`); output logits `[B, num_classes]` (float32).
    """

    family = "vivit"

    def __init__(
        self,
        num_frames=_B16["num_frames"],
        image_size=_B16["image_size"],
        patch_size=_B16["patch_size"],
        tubelet_size=_B16["tubelet_size"],
        hidden_dim=_B16["hidden_dim"],
        num_layers=_B16["num_layers"],
        num_heads=_B16["num_heads"],
        mlp_dim=_B16["mlp_dim"],
        num_classes=400,
        include_top=True,
        pooling=None,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        representation_size=None,
        tokenlearner=None,
        extra_layers=0,
        fuser_mix_tokens_over_time=True,
        gelu="tanh",
        name=None,
        **kwargs,
    ):
        super().__init__(constructor_arguments(locals()), name=name, **kwargs)

    @classmethod
    def resolve(cls, **arguments):
        return resolve_transformer("vivit", **arguments)

    @classmethod
    def build_graph(cls, r):
        inputs = keras.Input(shape=(r.num_frames,) + r.image_size + (3,), name="videos")
        x = TubeletEmbedding(
            r.hidden_dim, r.patch_size, r.tubelet_size, name="embedding"
        )(inputs)  # [B, T'*N, C]
        return inputs, build_trunk(x, r)


@register_model
def vivit_b16(**kwargs):
    """ViViT-B/16x2 (32 frames, 224 px by default)."""
    return create_model("vivit_b16", **kwargs)


@register_model
def vivit_l16(**kwargs):
    """ViViT-L/16x2 (the paper's 32x224 model, 1446 GFLOPs per view, Table 7)."""
    return create_model("vivit_l16", **kwargs)


@register_model
def vivit_l14(**kwargs):
    """ViViT-L/14x2."""
    return create_model("vivit_l14", **kwargs)


@register_model
def vivit_l10(**kwargs):
    """ViViT-L/10x2 (default 220 px = 22x22 patches)."""
    return create_model("vivit_l10", **kwargs)
