"""ViViT with TokenLearner (`tl_keras.models.vivit.model`): TokenLearner per time step,
the video fuser, arguments, the model contract (`run_model_test`). The trunk's numerics
against the reference are in `tests/models/vit/test_model.py` (shared trunk)."""

import numpy as np
import pytest

from test_case import TestCase, layers_of
from tl_keras import TL
from tl_keras.layers import TokenFuser, TokenLearner, TransformerBlock
from tl_keras.models import ViViT, vivit_b16

TINY_VIDEO = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=4, num_heads=2,
                  mlp_dim=64, num_classes=5, num_frames=4, tubelet_size=2)
RNG = np.random.default_rng(7)


def videos(batch=2, frames=4, size=32):
    return RNG.uniform(-1, 1, (batch, frames, size, size, 3)).astype("float32")


def block_tokens(model):
    return [layer.input.shape[1] for layer in layers_of(model, TransformerBlock)]


def test_video_tokenlearner_per_time_step():
    model = vivit_b16(**TINY_VIDEO, tokenlearner=TL(3, at=2))
    assert block_tokens(model) == [2 * 16, 2 * 16, 2 * 3, 2 * 3]
    (tl,) = layers_of(model, TokenLearner)
    assert tl.temporal and tuple(tl.input.shape) == (None, 2, 16, 32)


def test_video_fuser_mixes_all_tokens_or_per_frame():
    fused = vivit_b16(**TINY_VIDEO, tokenlearner=TL(3, at=3, fuser=True))
    (fuser,) = layers_of(fused, TokenFuser)
    assert fuser.mix_tokens_over_time  # paper §2.2 on the clip: all T*S tokens
    assert tuple(fuser.token_mixing.kernel.shape) == (6, 6)
    scenic = vivit_b16(**TINY_VIDEO, tokenlearner=TL(3, at=3, fuser=True),
                       fuser_mix_tokens_over_time=False)
    (fuser,) = layers_of(scenic, TokenFuser)
    assert tuple(fuser.token_mixing.kernel.shape) == (3, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(num_frames=5), "num_frames"), (dict(tubelet_size=0), "tubelet_size"),
     (dict(tokenlearner=TL(2, at=9)), "at"),
     (dict(fuser_mix_tokens_over_time=1), "fuser_mix_tokens_over_time")],
)
def test_video_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vivit_b16(**{**TINY_VIDEO, **kwargs})


class TestKerasContract(TestCase):
    @pytest.mark.parametrize(
        "kwargs",
        [
            dict(TINY_VIDEO),
            dict(TINY_VIDEO, tokenlearner=TL(2, at=2, fuser=True)),
            dict(TINY_VIDEO, tokenlearner=TL(2, at=3, fuser=True),
                 fuser_mix_tokens_over_time=False),
        ],
        ids=["plain", "tl_fuser", "tl_fuser_per_frame"],
    )
    def test_model_contract(self, kwargs):
        """Config, forward, `.keras` round trip, bfloat16 by value, a gradient for every
        trainable weight."""
        self.run_model_test(ViViT, kwargs, videos(), (2, 5))
