"""Cost of the transformer families (ViT and ViViT, + TokenLearner / TokenFuser), counted
the way the paper reports GFLOPs (MACs; formulas in `tl_keras.models.flops_formulas`):

* patch / tubelet embedding (a convolution: tokens x kernel volume x C);
* per block: Q, K, V and output projections (`4 N C^2`), the attention products `QK^T`
  and `AV` (`2 N^2 C`), the MLP (`2 N C M`);
* TokenLearner v1.1: its MLP (`N C 64 + N 64 S`) and the pooling product (`S N C`);
  v1: the 3x3 convs (`9 N C S + 3 x 9 N S^2`) and the pooling product; the ablation
  baselines (paper Table 6); per frame;
* TokenFuser: the token mixing (`C (TS)^2`, or `T C S^2` per frame), the beta MLP and
  the `N S C` product, per frame; the Fig. 7 alternatives: unpooling (`N S C` per frame,
  the maps are the TokenLearner's) and re-projection (attention of the N positions to
  the frame's S tokens plus an MLP of ratio 4);
* pre-logits and head Dense layers.

LayerNorms, softmax, GELU, bias and residual adds and the position-embedding add are not
counted. The paper's numbers come from XLA's cost analysis of the Flax model divided by
two (Scenic's `compute_flops(..., fuse_multiply_add=True)`), which also counts those
element-wise ops (at half weight). That is the whole gap between this count and the paper:
this count is 0.2-1.2% lower on every row of `PAPER_TABLE` (a pure-JAX re-creation of
ViT-B/16 at 384 gives 55.71 by XLA/2 vs 55.63 in the paper; MACs alone give 55.48).
Two further facts that make the paper's numbers come out: the plain ViT/ViViT baselines
carry a class token (N + 1 tokens), the TokenLearner models do not (`gap` pooling); and
the paper's patch embedding is a VALID convolution, so L/14 at 512 px sees 36x36 patches
(`image_size=504` here) and L/10 at 512 / 224 px sees 51x51 / 22x22 (`510` / `220`).

`resolved_cost(r)` counts from validated arguments (nothing built); `count_model_macs`
walks a built model's layers with the same formulas (a test checks they agree).
"""

import keras
import numpy as np

from tl_keras.layers.baselines import ReprojectionFuser, UnpoolFuser
from tl_keras.layers.embeddings import PatchEmbedding, TubeletEmbedding
from tl_keras.layers.token_learner import TokenFuser, TokenLearner, TokenLearnerV1
from tl_keras.layers.tokenizers import TOKENIZERS
from tl_keras.layers.transformer import TransformerBlock, encoder_layout, fuser_name
from tl_keras.models.flops_formulas import (
    Cost,
    block_cost,
    conv_cost,
    dense_cost,
    fuser_cost,
    norm_params,
    tokenizer_cost,
)
from tl_keras.models.specs import TL

# ----------------------------------------------------------------------------------------
# From resolved arguments (no model built).


def resolved_cost(r):
    """`Cost` of one example for resolved ViT / ViViT arguments
    (`tl_keras.models.vit.TransformerArguments`)."""
    c, frames, n = r.hidden_dim, r.frames or 1, r.positions
    cost = Cost()
    cost.add("embedding", *conv_cost(r.num_patches, r.kernel_volume, 1, c, use_bias=True))
    cost.add("cls", 0, r.num_prefix_tokens * c)
    cost.add("posembed_input", 0, (r.num_prefix_tokens + r.num_patches) * c)
    tokens = r.num_patches + r.num_prefix_tokens
    tl = r.tokenlearner
    layout = encoder_layout(r.num_layers, tl, r.extra_layers)
    k = 0
    for i, (tl_before, fuser_after) in enumerate(layout):
        block_tokens = tokens
        if tl_before:
            cost.add(f"tokenlearner_{k}", *tokenizer_cost(tl.version, frames, n, c, tl.num_tokens))
            block_tokens = frames * tl.num_tokens
        cost.add(f"encoderblock_{i}", *block_cost(block_tokens, c, r.mlp_dim))
        if fuser_after:
            fuser = fuser_cost(fuser_name(tl), frames, n, c, tl.num_tokens,
                               num_heads=r.num_heads, maps_reused=True,
                               mix_tokens_over_time=r.fuser_mix_tokens_over_time)
            cost.add(f"tokenfuser_{k}", fuser.macs, fuser.params)
        elif tl_before:
            tokens = block_tokens
        k += tl_before
    cost.add("encoder_norm", 0, norm_params(c))
    width = c
    if r.representation_size is not None:
        cost.add("pre_logits", *dense_cost(width, r.representation_size))
        width = r.representation_size
    if r.include_top:
        cost.add("head", *dense_cost(width, r.num_classes))
    return cost


# ----------------------------------------------------------------------------------------
# From a built model.


def _shape(tensor):
    return tuple(tensor.shape)


def _inputs(layer):
    """The tensors a functional layer was called with, in order (a TokenLearner /
    TokenFuser of a fuser block also gets the shared `normalized` tensor, last)."""
    inputs = layer.input
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _frames_positions(shape, temporal):
    """(frames, positions per frame, channels) of a TokenLearner/Fuser input shape."""
    if len(shape) == 3:
        return 1, shape[1], shape[2]
    if len(shape) == 4 and temporal:
        return shape[1], shape[2], shape[3]
    if len(shape) == 4:
        return 1, shape[1] * shape[2], shape[3]
    return shape[1], shape[2] * shape[3], shape[4]


def _baseline_version(layer):
    """The `TL` version name of an ablation-baseline tokenizer layer, else None."""
    if isinstance(layer, (TokenLearner, TokenLearnerV1)):
        return None
    for version, cls in TOKENIZERS.items():
        if type(layer) is cls:
            return version
    return None


_NO_MACS = (keras.layers.LayerNormalization, keras.layers.InputLayer)


def layer_macs(layer):
    """MACs of one example through `layer` (called once in a functional model)."""
    if isinstance(layer, (PatchEmbedding, TubeletEmbedding)):
        volume = int(np.prod(layer.conv.kernel.shape[:-1]))  # taps x input channels
        return conv_cost(_shape(layer.output)[1], volume, 1, layer.hidden_dim)[0]
    if isinstance(layer, TransformerBlock):
        _, n, c = _shape(layer.input)
        return block_cost(n, c, layer.mlp_dim)[0]
    if isinstance(layer, TokenLearnerV1):
        frames, n, c = _frames_positions(_shape(layer.input), layer.temporal)
        return tokenizer_cost("1", frames, n, c, layer.num_tokens,
                              num_conv_layers=layer.num_conv_layers)[0]
    if isinstance(layer, TokenLearner):
        frames, n, c = _frames_positions(_shape(_inputs(layer)[0]), layer.temporal)
        return tokenizer_cost("1.1", frames, n, c, layer.num_tokens,
                              bottleneck_dim=layer.bottleneck_dim)[0]
    if isinstance(layer, TokenFuser):
        tokens, original = _inputs(layer)[:2]
        frames, n, c = _frames_positions(_shape(original), layer.temporal)
        return fuser_cost("tokenfuser", frames, n, c, _shape(tokens)[1] // frames,
                          bottleneck_dim=layer.bottleneck_dim,
                          mix_tokens_over_time=layer.mix_tokens_over_time).macs
    if isinstance(layer, UnpoolFuser):  # the maps come from the TokenLearner's call
        tokens, original = _inputs(layer)[:2]
        frames, n, c = _frames_positions(_shape(original), layer.temporal)
        return fuser_cost("unpool", frames, n, c, _shape(tokens)[1] // frames,
                          maps_reused=True).macs
    if isinstance(layer, ReprojectionFuser):
        tokens, original = _inputs(layer)[:2]
        frames, n, c = _frames_positions(_shape(original), layer.temporal)
        return fuser_cost("reprojection", frames, n, c, _shape(tokens)[1] // frames,
                          num_heads=layer.num_heads).macs
    version = _baseline_version(layer)
    if version is not None:
        frames, n, c = _frames_positions(_shape(layer.input), layer.temporal)
        return tokenizer_cost(version, frames, n, c, layer.num_tokens)[0]
    if isinstance(layer, keras.layers.Dense):
        shape = _shape(layer.input)
        return dense_cost(shape[-1], layer.units, int(np.prod(shape[1:-1] or (1,))))[0]
    if isinstance(layer, _NO_MACS) or not layer.weights or all(
        not w.trainable for w in layer.weights
    ):
        return 0
    if type(layer).__name__ in ("ClassToken", "PositionEmbedding"):
        return 0
    raise ValueError(
        f"gflops: no MAC formula for layer '{layer.name}' ({type(layer).__name__})."
    )


def count_model_macs(model):
    """MACs of one example through a built functional model, layer by layer."""
    return sum(layer_macs(layer) for layer in model.layers)


# ----------------------------------------------------------------------------------------
# The paper's GFLOPs (Tables 2, 4, 5, 7) and the arguments that reproduce each row. Not
# listed: Table 2's "L/16, 24 layers, 16-TL at 12: 178.1", the same model as Table 5's
# 184.6 (this count: 183.7).

PAPER_TABLE = [
    # (description, model, kwargs, paper GFLOPs)
    ("ViT-B/16 @384", "vit_b16", dict(image_size=384), 55.63),
    ("B/16 @384, 8-TL at 6", "vit_b16", dict(image_size=384, tokenlearner=TL(8, 6)), 28.3),
    ("B/16 @384, 16-TL at 6", "vit_b16", dict(image_size=384, tokenlearner=TL(16, 6)), 28.7),
    ("B/16 @384, 8-TL at 6 + fuser", "vit_b16",
     dict(image_size=384, tokenlearner=TL(8, 6, fuser=True)), 28.5),
    ("B/16 @384, 16-TL at 6 + fuser", "vit_b16",
     dict(image_size=384, tokenlearner=TL(16, 6, fuser=True)), 29.1),
    ("ViT-L/16 @512", "vit_l16", dict(image_size=512), 363.1),
    ("L/16 @512, 16-TL at 12 (24+11)", "vit_l16",
     dict(image_size=512, tokenlearner=TL(16, 12), extra_layers=11), 186.8),
    ("L/16 @512, 8-TL at 18 (24+6)", "vit_l16",
     dict(image_size=512, tokenlearner=TL(8, 18), extra_layers=6), 274.2),
    ("L/14 @512 (=504), 16-TL at 18 (24+11)", "vit_l14",
     dict(image_size=504, tokenlearner=TL(16, 18), extra_layers=11), 361.6),
    ("L/16 @384, 16-TL at 2", "vit_l16", dict(image_size=384, tokenlearner=TL(16, 2)), 20.91),
    ("L/16 @384, 16-TL at 3", "vit_l16", dict(image_size=384, tokenlearner=TL(16, 3)), 28.66),
    ("L/16 @384, 16-TL at 6", "vit_l16", dict(image_size=384, tokenlearner=TL(16, 6)), 51.92),
    ("ViViT-L/16x2 32x224", "vivit_l16", dict(num_frames=32), 1446.0),
    ("ViViT-L/16x2, 16-TL at 12", "vivit_l16", dict(num_frames=32, tokenlearner=TL(16, 12)),
     766.0),
    ("ViViT-L/16x2, 8-TL at 18 (24+6)", "vivit_l16",
     dict(num_frames=32, tokenlearner=TL(8, 18), extra_layers=6), 1105.0),
    # Further rows of the paper.
    ("L/16 @512, 16-TL at 12 (Table 5)", "vit_l16",
     dict(image_size=512, tokenlearner=TL(16, 12)), 184.6),
    ("L/16 @512, 16-TL at 12 + fuser", "vit_l16",
     dict(image_size=512, tokenlearner=TL(16, 12, fuser=True)), 187.1),
    ("L/16 @512, 8-TL at 18", "vit_l16", dict(image_size=512, tokenlearner=TL(8, 18)), 273.2),
    ("L/16 @512, 8-TL at 18 + fuser", "vit_l16",
     dict(image_size=512, tokenlearner=TL(8, 18, fuser=True)), 273.8),
    ("L/10 @512 (=510), 16-TL at 18 (24+11)", "vit_l10",
     dict(image_size=510, tokenlearner=TL(16, 18), extra_layers=11), 849.0),
    ("L/10 @512 (=510), 16-TL at 18 (24+11) + fuser", "vit_l10",
     dict(image_size=510, tokenlearner=TL(16, 18, fuser=True), extra_layers=11), 856.9),
    ("ViViT-L/14x2, 16-TL at 18 (24+11)", "vivit_l14",
     dict(num_frames=32, tokenlearner=TL(16, 18), extra_layers=11), 1621.0),
    ("ViViT-L/10x2 (224=220), 16-TL at 18 (24+11)", "vivit_l10",
     dict(num_frames=32, tokenlearner=TL(16, 18), extra_layers=11), 4076.0),
]
