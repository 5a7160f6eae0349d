"""tl_keras.data.datasets: the per-dataset facts registry."""

import subprocess
import sys

import pytest

from tl_keras import data


@pytest.mark.parametrize(
    "name, classes, multilabel, metric, modality",
    [
        ("kinetics400", 400, False, "top1", "video"),
        ("kinetics600", 600, False, "top1", "video"),
        ("charades", 157, True, "mAP", "video"),
        ("avid", 887, False, "mean_class_accuracy", "video"),
        ("imagenet2012", 1000, False, "top1", "image"),
    ],
)
def test_registered_facts(name, classes, multilabel, metric, modality):
    info = data.get_dataset_info(name)
    assert (info.num_classes, info.multilabel, info.metric, info.modality) == (
        classes,
        multilabel,
        metric,
        modality,
    )
    assert info.splits["train"] > 0
    if modality == "video":
        assert (
            info.num_frames and info.stride and (info.num_test_clips, info.num_test_crops) == (4, 3)
        )


def test_split_sizes_and_default_sampling():
    assert data.get_dataset_info("imagenet2012").num_examples("validation") == 50_000
    assert data.get_dataset_info("imagenet2012").num_examples("train") == 1_281_167
    k400 = data.get_dataset_info("kinetics400")
    assert (k400.num_frames, k400.stride, k400.crop_size, k400.min_resize) == (32, 2, 224, 256)
    assert data.get_dataset_info("charades").num_frames == 64
    with pytest.raises(KeyError, match="no split 'test'.*'train', 'validation'"):
        data.get_dataset_info("charades").num_examples("test")


def test_lookup_is_forgiving_and_unknown_names_list_the_known_ones():
    assert data.get_dataset_info("Kinetics-400") is data.get_dataset_info("kinetics400")
    with pytest.raises(ValueError, match=r"unknown dataset 'ucf101'.*kinetics400"):
        data.get_dataset_info("ucf101")
    assert data.list_datasets("kinetics*") == ["kinetics400", "kinetics600"]


def test_register_custom_dataset():
    info = data.DatasetInfo(
        name="tiny_test_set",
        modality="video",
        num_classes=3,
        multilabel=False,
        splits={"train": 10},
        metric="top1",
        num_frames=4,
        stride=1,
    )
    try:
        data.register_dataset(info)
        assert data.get_dataset_info("tiny_test_set").num_classes == 3
        with pytest.raises(ValueError, match="already registered"):
            data.register_dataset(info)
        data.register_dataset(info, overwrite=True)
        with pytest.raises(ValueError, match="modality='audio'"):
            data.DatasetInfo(
                name="x",
                modality="audio",
                num_classes=1,
                multilabel=False,
                splits={},
                metric="top1",
            )
    finally:
        data.datasets._REGISTRY.pop("tiny_test_set", None)


def test_data_package_does_not_import_models_layers_or_trainer():
    # `import tl_keras` registers the layers and models for `keras.saving` (so that
    # `.keras` files load after a plain `import tl_keras`); the data package itself must
    # pull in nothing of the trainer, and no data module may name models/layers/trainer.
    code = (
        "import sys, tl_keras.data; "
        "bad = [m for m in sys.modules if m.startswith(('tl_keras.train', 'tl_keras.export'))]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    # And no module in tl_keras/data names them.
    import pathlib

    for path in pathlib.Path(data.__file__).parent.glob("*.py"):
        text = path.read_text()
        for banned in ("tl_keras.models", "tl_keras.layers", "tl_keras.train", "import keras"):
            assert banned not in text, f"{path.name} mentions {banned}"
