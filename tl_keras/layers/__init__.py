"""Keras layers of tl_keras: TokenLearner (v1.1 and v1), TokenFuser, VectorAttention."""

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
