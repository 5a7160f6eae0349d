"""Keras layers of tl_keras: TokenLearner (v1.1 and v1), TokenFuser, VectorAttention.

Modules (they import no model, data or trainer code; docs/architecture.md):

* `token_learner`: `TokenLearner` (v1.1), `TokenLearnerV1`, `TokenFuser`;
* `vector_attention`: `VectorAttention` (the X(2+1)D module's transformer, paper §6.1
  and Appendix A.1);
* `baselines`: the ablation tokenizers and fusers (Table 6, Fig. 7, §6.3);
* `tokenizers`: the one registry of token-learner / fuser names and their factories;
* `embeddings`: patch / tubelet embeddings, class token, position embedding, pooling;
* `transformer`: the ViT block and the one encoder (with its TokenLearner placement)
  that ViT and ViViT share;
* `fused_ops`: the fast Dense / LayerNorm forms of the hot paths (and why they keep
  Keras' quantization, LoRA and dtype policies working);
* `_utils`: argument checks and shape helpers.
"""

from tl_keras.layers.token_learner import TokenFuser, TokenLearner, TokenLearnerV1
from tl_keras.layers.vector_attention import VectorAttention

__all__ = ["TokenLearner", "TokenLearnerV1", "TokenFuser", "VectorAttention"]
from tl_keras.layers.embeddings import (  # noqa: E402
    ClassToken,
    PatchEmbedding,
    PositionEmbedding,
    TokenPooling,
    TubeletEmbedding,
)
from tl_keras.layers.transformer import (  # noqa: E402
    MultiHeadSelfAttention,
    TransformerBlock,
    build_encoder,
)

__all__ += [
    "PatchEmbedding",
    "TubeletEmbedding",
    "ClassToken",
    "PositionEmbedding",
    "TokenPooling",
    "MultiHeadSelfAttention",
    "TransformerBlock",
    "build_encoder",
]
