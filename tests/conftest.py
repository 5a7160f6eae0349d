"""Shared pytest set-up: quiet TensorFlow logs, fixed seeds, a clean Keras state per test."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

# Python's garbage collector walks every tracked object on each full collection; with
# TensorFlow (or JAX) and Keras loaded that is ~400k objects and ~1 s per `gc.collect()`.
# Keras calls it itself (once per layer in `Model.quantize`, in `clear_session`), which
# made an int8 test of a 4-block ViT take 20 s, 97% of it in the collector. Objects alive
# after the imports (and after each test module, below) live for the whole session, so
# they are moved out of the collector's way; what the tests create is collected as usual.
gc.collect()
gc.freeze()


@pytest.fixture(autouse=True)
def _clean_keras_state():
    keras.utils.set_random_seed(0)
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy("float32")
    # Without Python's garbage collection: with TensorFlow loaded a full collection takes
    # 1-2 s, which after every test was a large share of the suite's time. It runs once
    # per test module instead (below).
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_per_module():
    yield
    gc.collect()
    gc.freeze()  # what survives a module (imports made by it, caches) stays to the end


# Every test has a time limit (pyproject.toml: `timeout`, for the default suite); the
# `slow` checks (real training runs, benchmarks in quick mode) get a longer one unless
# they set their own with `@pytest.mark.timeout(...)`.
SLOW_TIMEOUT_S = 900


def pytest_collection_modifyitems(config, items):
    """Time limits for `slow` tests; `@pytest.mark.tf_only` tests are skipped under
    another Keras backend."""
    for item in items:
        if "slow" in item.keywords and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))
    if keras.backend.backend() == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (running {keras.backend.backend()})")
    for item in items:
        if "tf_only" in item.keywords:
            item.add_marker(skip)
