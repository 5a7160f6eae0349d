"""Shared by throughput.py, memory.py and plot.py: machine facts, load average, the model
variants that are timed (`groups`).

Not part of the library: `benchmarks/` are thin scripts over it (see BENCHMARKS.md).
"""

import dataclasses
import datetime
import os
import platform
import shlex
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def loadavg():
    """1-, 5- and 15-minute load averages."""
    try:
        return tuple(round(v, 2) for v in os.getloadavg())
    except OSError:
        return (float("nan"),) * 3


def _busy_jiffies():
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _process_jiffies(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except OSError:
        return 0


class OtherLoad:
    """CPU used by *other* processes between `start()` and `stop()`, in cores (e.g. 0.05 =
    5% of one core): machine busy time minus this process's and `pids`' CPU time. The
    1-minute load average counts the benchmark's own threads; this does not."""

    def __init__(self, pids=()):
        self.pids = list(pids)

    def start(self):
        self._t0 = time.monotonic()
        self._busy0, _ = _busy_jiffies()
        self._own0 = sum(_process_jiffies(p) for p in ["self"] + self.pids)
        return self

    def stop(self):
        busy, _ = _busy_jiffies()
        own = sum(_process_jiffies(p) for p in ["self"] + self.pids)
        hz = os.sysconf("SC_CLK_TCK")
        seconds = max(time.monotonic() - self._t0, 1e-9)
        return round(max(0, (busy - self._busy0) - (own - self._own0)) / hz / seconds, 3)


def machine():
    import keras
    import tensorflow as tf

    return dict(
        date=datetime.date.today().isoformat(),
        cores=os.cpu_count(),
        cpu=cpu_model(),
        system=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        tensorflow=tf.__version__,
        keras=keras.__version__,
        command="python " + " ".join(shlex.quote(a) for a in sys.argv),
    )


def machine_line(info):
    return (
        f"date {info['date']}; machine: {info['cores']} cores, {info['cpu']} "
        f"({info['system']}); Python {info['python']}, TensorFlow {info['tensorflow']}, "
        f"Keras {info['keras']}"
    )


@dataclasses.dataclass
class Group:
    """One base model and its TokenLearner variants, timed together (interleaved)."""

    key: str  # command-line name
    title: str
    model: str  # registered tl_keras model name
    kwargs: dict  # on top of the registry entry
    input_shape: tuple  # one example
    variants: list  # [(label, TL or None)], the first is the base
    infer_batch: int
    train_batch: int
    unit: str = "images"
    peer: dict = None  # timm peer: {"model": ..., "model_args": {...}} or None


def groups(quick):
    """The benchmark's model groups (tiny ones with `quick`)."""
    from tl_keras import TL

    if quick:
        tiny = dict(image_size=32, patch_size=8, hidden_dim=32, num_layers=4, num_heads=2,
                    mlp_dim=64)
        return [
            Group(
                "vit_tiny", "tiny ViT (32 px, /8, 32 wide, 4 blocks)", "vit_ti16", tiny,
                (32, 32, 3),
                [("base", None), ("4-TL at 2", TL(4, at=2)),
                 ("4-TL at 2 + fuser", TL(4, at=2, fuser=True))],
                infer_batch=2, train_batch=2,
                peer=dict(model="vit_base_patch16_224",
                          model_args=dict(img_size=32, patch_size=8, embed_dim=32, depth=4,
                                          num_heads=2, mlp_ratio=2.0)),
            ),
            Group(
                "vivit_tiny", "tiny ViViT (4 frames, 32 px)", "vivit_b16",
                dict(tiny, num_frames=4), (4, 32, 32, 3),
                [("base", None), ("4-TL at 2", TL(4, at=2))],
                infer_batch=2, train_batch=2, unit="videos",
            ),
        ]
    return [
        Group(
            "vit_s16", "ViT-S/16, 224 px", "vit_s16", {}, (224, 224, 3),
            [("base", None), ("8-TL at 6", TL(8, at=6)), ("16-TL at 6", TL(16, at=6)),
             ("8-TL at 6 + fuser", TL(8, at=6, fuser=True))],
            infer_batch=8, train_batch=8,
        ),
        Group(
            "vit_b16", "ViT-B/16, 224 px", "vit_b16", {}, (224, 224, 3),
            [("base", None), ("8-TL at 6", TL(8, at=6)), ("16-TL at 6", TL(16, at=6)),
             ("8-TL at 6 + fuser", TL(8, at=6, fuser=True))],
            infer_batch=8, train_batch=8,
            peer=dict(model="vit_base_patch16_224", model_args={}),
        ),
        Group(
            "vivit_s16", "ViViT-S/16x2 (384 wide, 12 blocks), 8 frames, 224 px", "vivit_b16",
            dict(hidden_dim=384, num_heads=6, mlp_dim=1536, num_frames=8),
            (8, 224, 224, 3),
            [("base", None), ("8-TL at 6", TL(8, at=6))],
            infer_batch=4, train_batch=4, unit="videos",
        ),
    ]


def select_groups(quick, names):
    all_groups = groups(quick)
    if not names:
        return all_groups
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {g.key: g for g in all_groups}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown group(s) {unknown}; known: {sorted(known)}")
    return [known[n] for n in wanted]


def variant_kwargs(group, tl):
    return dict(group.kwargs, tokenlearner=tl)


def fmt(value, digits=2):
    return f"{value:.{digits}f}"
