"""Kinetics-400 / Kinetics-600: ViViT-L/16x2 + TokenLearner (paper §5, Appendix A.3).

Recipe (paper §5.2 / A.3: 30 epochs, base lr 0.05, the Momentum optimizer, "all the
settings in our Kinetics experiments follow the setting of ViViT" [Arnab et al. 2021];
the rest as Scenic's unfactorised ViViT config
`scenic/projects/vivit/configs/kinetics400/vivit_base_k400.py`): ViViT-L/16x2, 32 frames
at stride 2, 224 crops of a 256 short side, TokenLearner with 8 tokens per frame before
block 18 ("8at18"), SGD momentum 0.9 (Scenic's default for "momentum"), cosine decay after
2.5 warmup epochs, batch 64, global-norm clipping 1.0, no label smoothing, no weight decay,
4 clips x 3 crops at test (logits averaged). ViViT starts from a JFT-pretrained ViT in the
paper (not public); pass other weights with `--set model.init_checkpoint=PATH`: a public
image ViT checkpoint (below), a `.keras` file of a tl_keras ViT (e.g. a run's
`export/<step>/model.keras`) or a `.weights.h5` of this model (docs/weights.md).

Command (TPU v3-32 class; any strategy works):

    python experiments/kinetics.py --dataset=kinetics400 --tpu=my-tpu \\
        --data_dir=gs://bucket/kinetics400 --workdir=gs://bucket/runs/k400_tl8at18

Expected result (paper Table 8, JFT-pretrained, 4x3 views): 84.5% top-1 on Kinetics-400
(8at18; 83.5% for 16at12 = `--set model.tokenlearner.num_tokens=16
model.tokenlearner.at=12`); Kinetics-600 (Table 9, 8at18): 86.0% top-1, 97.0% top-5.
Without JFT pre-training expect less; the numbers are the paper's, not re-measured here.

Starting from the public ImageNet-21k ViTs of the original JAX ViT release
(github.com/google-research/vision_transformer; download
`https://storage.googleapis.com/vit_models/imagenet21k/ViT-L_16.npz`, and
`https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz` for ViViT-B; the
"augreg" `.npz` files listed there and timm `.safetensors` load the same way), the 2-D
patch kernel is inflated over the 2-frame tubelet (ViViT §3.4; `central_frame`, the
default, or `--set model.init_checkpoint_kernel_init=average`), the position embedding
tiled over time, the TokenLearner and the 400-class head freshly initialised (the run
logs the report):

    python experiments/kinetics.py --dataset=kinetics400 --tpu=my-tpu \\
        --data_dir=gs://bucket/kinetics400 --workdir=gs://bucket/runs/k400_i21k_tl8at18 \\
        --set model.init_checkpoint=ViT-L_16.npz

For ViViT-B/16x2 add `model.name=vivit_b16 model.tokenlearner.at=9
model.init_checkpoint=ViT-B_16.npz optim.base_lr=0.1` (the TokenLearner at 3/4 of the
depth as 18 of 24; lr 0.1 as Scenic's `vivit_base_k400.py`). Expected result: the
TokenLearner paper gives none for ImageNet-21k initialisation (its numbers above are
JFT-pretrained; §5.2 notes that other methods of its Table 8 use other pre-training data,
such as ImageNet-21K). The closest published number is without TokenLearner: ViViT-B/16x2
(unfactorised) from an ImageNet-21k ViT-B/16 with that config, 79.9% top-1 on Kinetics-400
with 4x3 views (Scenic's ViViT model zoo, `scenic/projects/vivit/README.md`). Not
re-measured here.

With a TokenFuser (`--set model.tokenlearner.fuser=tokenfuser`), its token mixing follows
the paper's text by default: one `T*S x T*S` mixing of all the clip's tokens (§2.2);
`--set model.fuser_mix_tokens_over_time=false` mixes the `S` tokens of each frame on their
own, as the reference implementation (Scenic's ViViT + TokenLearner) does and as its
checkpoints expect.

Quick check on this machine (2-core CPU, 1-2 minutes including the built-in data):

    python experiments/kinetics.py --runlocal

trains a tiny ViViT + TokenLearner (4 blocks of width 64, 8 tokens per frame before block 2)
on the built-in single-label motion dataset (`tl_keras.data.synthetic`, 480 train / 120
validation videos of 16 frames 32x32, 4 classes), evaluates it with 4 clips x 3 crops,
writes `metrics.json` and exports the model. Expected: top-1 >= 0.85 (measured: 1.00 after
600 steps, 50-100 s wall on a shared 2-core CPU). CI runs it as the
README's main command and checks the target.
"""

from __future__ import annotations

import sys

from experiments import common
from tl_keras import configs

DATASETS = ("kinetics400", "kinetics600")


def get_config(runlocal=False, dataset="kinetics400"):
    if dataset not in DATASETS:
        raise configs.ConfigError(f"--dataset={dataset!r}: expected one of {DATASETS}")
    cfg = configs.Config(experiment=dataset)
    # Model: ViViT-L/16x2, 8 tokens per frame before block 18.
    cfg.model.name = "vivit_l16"
    cfg.model.tokenlearner = configs.TokenLearnerConfig(num_tokens=8, at=18)
    # Data: 32 frames every 2, 224 of 256, 4 x 3 test views.
    cfg.data.dataset = dataset
    cfg.data.num_frames = 32
    cfg.data.stride = 2
    cfg.data.crop_size = 224
    cfg.data.min_resize = 256
    cfg.data.eval_split = "test"
    cfg.data.eval_pattern = "validation*"
    # uint8 pixels leave the host and are normalised on the device: faster and a quarter of
    # the host memory of float32 clips (BENCHMARKS.md, "Input pipeline").
    cfg.data.output_dtype = "uint8"
    cfg.eval.num_clips = 4
    cfg.eval.num_crops = 3
    cfg.eval.batch_size = 64
    cfg.eval.average = "logits"
    # Training: momentum 0.9, lr 0.05, cosine after 2.5 warmup epochs, 30 epochs, batch 64.
    cfg.train.batch_size = 64
    cfg.train.num_epochs = 30
    cfg.train.steps_per_loop = 100
    cfg.train.log_every = 100
    cfg.train.checkpoint_every = 2000
    cfg.train.label_smoothing = 0.0
    cfg.optim.name = "momentum"
    cfg.optim.momentum = 0.9
    cfg.optim.base_lr = 0.05
    cfg.optim.schedule = "cosine"
    cfg.optim.warmup_epochs = 2.5
    cfg.optim.grad_clip_norm = 1.0
    if runlocal:
        runlocal_config(cfg, "synthetic_single")
    return cfg


def runlocal_config(cfg, dataset):
    """The tiny ViViT and the built-in dataset; charades.py / avid.py take its loop
    settings and swap in a tiny X(2+1)D-M (`charades.runlocal_config`)."""
    cfg.experiment = f"{cfg.experiment}-runlocal"
    cfg.model = configs.ModelConfig(
        name="vivit_b16", patch_size=8, tubelet_size=2, hidden_dim=64, num_layers=4,
        num_heads=4, mlp_dim=128, tokenlearner=configs.TokenLearnerConfig(num_tokens=8, at=2),
    )
    cfg.data = configs.DataConfig(dataset=dataset, eval_split="test", output_dtype="uint8")
    cfg.eval = configs.EvalConfig(batch_size=16, num_clips=4, num_crops=3)
    cfg.train.batch_size = 16
    cfg.train.num_steps = 600
    cfg.train.num_epochs = None
    cfg.train.steps_per_loop = 10
    cfg.train.log_every = 50
    cfg.train.checkpoint_every = 200
    cfg.train.deterministic = True
    cfg.optim = configs.OptimConfig(
        name="adamw", base_lr=3e-3, weight_decay=0.05, schedule="cosine", warmup_steps=50,
        grad_clip_norm=1.0,
    )
    return cfg


def _flags(parser):
    parser.add_argument("--dataset", default="kinetics400", choices=DATASETS)


def main(argv=None):
    """The command line (module docstring, `common.py`); returns the exit code."""
    return common.main(get_config, description=__doc__, argv=argv, extra_flags=_flags,
                       experiment_kwargs=lambda a: {"dataset": a.dataset})


if __name__ == "__main__":
    sys.exit(main())
