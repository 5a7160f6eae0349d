"""Shared pytest set-up: quiet TensorFlow logs, fixed seeds, a clean Keras state per test."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _clean_keras_state():
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.tf_only` tests are skipped under another Keras backend."""
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (running {keras.backend.backend()})")
    for item in items:
        if "tf_only" in item.keywords:
            item.add_marker(skip)
