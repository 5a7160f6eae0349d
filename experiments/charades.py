"""Charades (multi-label, mAP): TokenLearner in a video network (paper §6, Appendix A.3).

Recipe (paper A.3): cosine learning-rate decay, base lr 0.8 per TPU core with 4 examples
per core, i.e. `lr = 0.8 * global_batch / 4` (64 cores: batch 256, peak lr 51.2), 100k
iterations, 64-frame clips (records extracted at 12 fps), sigmoid cross-entropy (mean over
the 157 classes), no label smoothing. The network is X(2+1)D-M (`tl_keras.models.x2plus1d_m`)
with the bottleneck module of Fig. 9 in res5: 3x3 Conv2D, TokenLearner (8 tokens per frame),
VectorAttention, TokenFuser. Training on 224 x 224 x 64 clips, testing on 256 x 256 x 64
(§6.1): `data.eval_crop_size=256`, the network rebuilt at 256 px with the trained weights
before every evaluation. Evaluation as A.3 ("64-frame segments ... merging their output
responses"): `data.eval_split=segments` cuts every validation video into 64-frame
segments that cover it, `eval.segment_merge=max` merges their outputs per video (the
paper does not say how; `max` because a Charades label says the action happens somewhere
in the video, `mean` is the alternative), then mAP over the classes with positives. The
optimizer (momentum 0.9) and the 1000-step warmup are ours: the paper states only the
schedule and the rates.

Records: `tools/make_tfrecords.py ... --fps=12 --min_resize=256` (Table 10 and the
"Char-12fps" column of Table 12); `--fps=6` for the "Charades-6fps" numbers of Tables
12-14 and §6.3 (same command, same 64-frame clips).

Command (Table 10, "Ours", X(2+1)D-M + TokenLearner, 12 fps, no pre-training: 66.3 mAP):

    python experiments/charades.py --tpu=my-tpu --data_dir=gs://bucket/charades \
        --workdir=gs://bucket/runs/charades_tl

Other rows, the same command plus (expected mAP from the paper; none re-measured here):

* Table 10, "Backbone (X(2+1)D-M)", 62.7: `--set model.module=conv2d_conv1d`;
* Table 12, Char-12fps column: `model.module=joint_mhsa` 64.0, `conv2d_joint_mhsa` 62.5,
  `tokenlearner` 63.4, `conv2d_tokenlearner` (the default) 66.3;
* 6 fps records (`--data_dir` of `--fps=6` records): Tables 12-13 by `model.module`
  (`conv2d_conv1d` 56.6, `joint_mhsa` 57.9, `conv2d_joint_mhsa` 58.6, `conv2d_mlp_mixer`
  57.0, `conv2d_temporal_transformer` 58.4, `spatial_temporal_transformer` 58.8,
  `conv2d_spatial_temporal_transformer` 58.0, `tokenlearner` 58.8, `spatial_tokenlearner`
  58.9, `conv2d_tokenlearner` 59.6), Table 14 (`conv2d_joint_mhsa` 58.4,
  `conv2d_vector_transformer` 58.1, `conv2d_prior_broadcast` 58.6,
  `conv2d_vector_transformer_broadcast` 58.9, `conv2d_tokenlearner_mhsa` 59.0), and §6.3's
  token learners (`model.tokenlearner.version=grid` 58.8, `fc` 56.6, `pool_mlp` 58.6);
  the values are `PAPER_MODULES` / `PAPER_TABLE14` of `tl_keras.models.x2plus1d.flops`.

Quick check on this machine (2-core CPU, ~2-3 minutes when the machine is otherwise idle):

    python experiments/charades.py --runlocal

trains the tiny ViViT + TokenLearner of `kinetics.py --runlocal` with a sigmoid loss on the
built-in multi-label dataset (`synthetic_multi`: 1-3 coloured squares, each moving its own
way; 12 (colour, direction) classes; 600 train / 150 validation videos of 16 frames), and
evaluates it the recipe's way at this scale: each video cut into 2 segments of 8 frames,
merged by max (`data.eval_split=segments`), on 40 px frames after training on 32 px crops
of the same 40 px frames (`data.eval_crop_size=40`; the ViViT rebuilt at 40 px, its
position embedding resized from 4x4 to 5x5 patches); writes `metrics.json`, the token
maps (of the 40 px evaluation model) and exports. Target: mAP >= 0.80 (CI: the slow test
`test_runlocal_learns_in_under_five_minutes_and_exports`).

Not yet the recipe's network: `runlocal_config` below (the X(2+1)D-M of this recipe scaled
down, `x2plus1d_tiny`, with the `conv2d_tokenlearner` module; what `avid.py --runlocal`
trains, to 1.00 mean class accuracy) does not reach the target reliably on this dataset.
Measured on 2026-12-03 (quiet 2-core CPU, 1500 steps unless said, the 4 clips x 3 crops
evaluation used then): 8 consecutive frames 0.835 (209 s) and 0.803 (186 s, after a
change of VectorAttention's arithmetic order); 4 frames at stride 2 0.822 (116 s), the
same with 2000 steps 0.773; 4 frames at stride 4 0.553; 800 steps of 8 frames 0.64. The
outcome moves by several points with the floating-point order alone, too close to the
target for CI. Re-measured on 2026-12-07 (AMD EPYC, 2 cores, quiet) with this runlocal's
evaluation (2 segments of 8 frames, merged by max, 40 px frames after training on 32 px
crops of them): 1500 steps 0.594 mAP in 328 s (5 steps/s: a train step of `x2plus1d_tiny`
takes ~150 ms here, most of it in `Conv2DBackpropFilter` / `Conv2DBackpropInput`); 600
steps with base lr 0.01 / 0.001 / no weight decay: 0.33 / 0.26 / 0.40. Training on crops
of the 40 px frames hides part of a square for part of the clip (its label stays), which
the ViViT copes with and the tiny conv net does not within 5 minutes here.
"""

from __future__ import annotations

import sys

from experiments import common, kinetics
from tl_keras import configs


def get_config(runlocal=False):
    cfg = configs.Config(experiment="charades")
    # X(2+1)D-M with the TokenLearner bottleneck module in res5 (paper Fig. 9): 8 tokens
    # per frame (the single-conv TokenLearner of §6.1), VectorAttention, TokenFuser.
    cfg.model.name = "x2plus1d_m"
    cfg.model.module = "conv2d_tokenlearner"
    cfg.model.tokenlearner = configs.TokenLearnerConfig(num_tokens=8)
    cfg.data.dataset = "charades"
    cfg.data.num_frames = 64
    cfg.data.stride = 1
    cfg.data.crop_size = 224
    cfg.data.min_resize = 256
    # Evaluation as A.3 / §6.1: every validation video cut into 64-frame segments that
    # cover it, the segments' outputs merged per video (max: a label says the action
    # happens somewhere in the video), then mAP; on 256 x 256 frames ("224 x 224 x 64
    # videos for training and 256 x 256 x 64 videos for testing"): the network is
    # rebuilt at 256 px with the trained weights (X(2+1)D is fully convolutional).
    cfg.data.eval_split = "segments"
    cfg.data.eval_crop_size = 256
    cfg.data.eval_pattern = "validation*"
    cfg.eval.segment_merge = "max"
    # uint8 pixels leave the host and are normalised on the device: faster and a quarter of
    # the host memory of float32 clips (BENCHMARKS.md, "Input pipeline").
    cfg.data.output_dtype = "uint8"
    cfg.eval.num_crops = 1  # one 256 x 256 centre crop of the 256-px frames per segment
    cfg.eval.batch_size = 64  # segments, of several videos per batch
    cfg.train.batch_size = 256  # 4 per core on 64 cores
    cfg.train.num_steps = 100_000
    cfg.train.steps_per_loop = 100
    cfg.train.log_every = 100
    cfg.train.checkpoint_every = 2000
    cfg.train.loss = "sigmoid"
    cfg.train.label_smoothing = 0.0
    cfg.optim.name = "momentum"
    cfg.optim.momentum = 0.9
    cfg.optim.base_lr = 0.8
    cfg.optim.lr_reference_batch = 4  # 0.8 per core batch of 4, scaled to the global batch
    cfg.optim.schedule = "cosine"
    cfg.optim.warmup_steps = 1000
    if runlocal:
        kinetics.runlocal_config(cfg, "synthetic_multi")
        cfg.train.loss = "sigmoid"
        cfg.train.num_steps = 1500  # multi-label needs longer than kinetics' 600
        # The recipe's evaluation at this scale: 16-frame videos cut into 2 segments of
        # 8 frames, merged by max; trained on 32 px crops of frames resized to 40 px and
        # evaluated on the whole 40 px frame (as 224 crops of 256 px frames / 256 px),
        # by the ViViT rebuilt at 40 px with its position embedding resized (4x4 -> 5x5).
        cfg.data.eval_split = "segments"
        cfg.eval.segment_merge = "max"
        cfg.eval.num_clips = None
        cfg.eval.num_crops = 1
        cfg.data.min_resize = 40
        cfg.data.crop_size = 32
        cfg.data.eval_crop_size = 40
    return cfg


def runlocal_config(cfg, dataset):
    """`--runlocal` of avid.py: the X(2+1)D-M of the recipe scaled down
    (`x2plus1d_tiny`) with the default `conv2d_tokenlearner` module in its last stage, on
    the built-in dataset; the loop settings of `kinetics.runlocal_config`."""
    kinetics.runlocal_config(cfg, dataset)
    cfg.model = configs.ModelConfig(
        name="x2plus1d_tiny", module="conv2d_tokenlearner", dropout_rate=0.0,
        tokenlearner=configs.TokenLearnerConfig(num_tokens=4),
    )
    cfg.data.num_frames = 8  # 8 consecutive frames of the 16: random offset in training
    cfg.data.stride = 1
    cfg.eval.num_crops = 1  # the 32 px frames are the crop: 3 crops would be one view 3 times
    cfg.train.num_steps = 1500  # 800 steps: 0.64 mAP; 600 steps of 16 frames: 0.68
    return cfg


def main(argv=None):
    """The command line (module docstring, `common.py`); returns the exit code."""
    return common.main(get_config, description=__doc__, argv=argv)


if __name__ == "__main__":
    sys.exit(main())
