"""Keras layers of tl_keras: TokenLearner (v1.1 and v1), TokenFuser, VectorAttention."""

from tl_keras.layers.token_learner import TokenFuser, TokenLearner, TokenLearnerV1
from tl_keras.layers.vector_attention import VectorAttention

__all__ = ["TokenLearner", "TokenLearnerV1", "TokenFuser", "VectorAttention"]
