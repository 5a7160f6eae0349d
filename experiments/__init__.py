"""The paper's experiments, one module each, run as scripts from the repository root:

    python experiments/kinetics.py --runlocal
    python experiments/imagenet.py --tpu=my-tpu --data_dir=gs://... --workdir=gs://...

`common` is their shared command line (flags -> config -> strategy -> `tl_keras.train.run`);
`kinetics.runlocal_config` is the tiny `--runlocal` set-up that `charades` and `avid` reuse.
The package is installed beside `tl_keras` (`pip install -e .`), so the modules import each
other as `from experiments import common, kinetics`; `tl_keras` never imports them.
Importing them loads no TensorFlow (`common.main` imports it after reading the flags).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
os.environ.setdefault("TL_KERAS_LAZY_IMPORT", "1")  # tl_keras parts on first use (tl_keras/__init__.py)
