"""`service_address=`: the input pipeline through a `tf.data` service dispatcher and workers
started on loopback in the test process (`tools/data_service.py` runs them on real machines).

Processing mode `distributed_epoch` (the default): with one worker the client gets exactly
the local pipeline's elements in order (same seed), so the batches are compared array for
array; with two workers each finite pass's files (each pass of a repeated one) go to one
worker, so evaluation yields the same multiset of clips and training draws no clip twice.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICE = tf.data.experimental.service


@pytest.fixture
def service():
    """`start(num_workers) -> "localhost:port"`: a dispatcher and workers, stopped at the end."""
    servers = []

    def start(num_workers):
        dispatcher = SERVICE.DispatchServer(SERVICE.DispatcherConfig(port=0))
        address = dispatcher.target.split("://")[1]
        servers.append(dispatcher)
        for _ in range(num_workers):
            servers.append(SERVICE.WorkerServer(SERVICE.WorkerConfig(dispatcher_address=address)))
        return address

    yield start
    for server in reversed(servers):
        server._stop()


def _textured_files(records, num_files=4, per_file=3, num_frames=6):
    """Record k has label k and its own random frames (so crops and offsets show)."""
    rng = np.random.default_rng(0)
    paths = data.shard_filenames(os.path.join(records.root, "tex"), num_files)
    k = 0
    for path in paths:
        recs = []
        for _ in range(per_file):
            frames = rng.integers(0, 256, (num_frames, 24, 32, 3), dtype=np.uint8)
            recs.append(records.record(frames, labels=(k,)))
            k += 1
        data.writer.write_tfrecord(path, recs)
    return os.path.join(records.root, f"tex@{num_files}"), num_files * per_file


def _video(pattern, num_classes, **kwargs):
    kwargs = {**dict(num_classes=num_classes, num_frames=2, crop_size=16, min_resize=20,
                     batch_size=4, seed=3), **kwargs}
    return data.video_dataset(pattern, **kwargs)


def _take(ds, num_batches):
    xs, ys = [], []
    for i, (x, y) in enumerate(ds):
        if i == num_batches:
            break
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_one_worker_gives_the_local_training_batches_in_order(records, service):
    pattern, n = _textured_files(records)
    address = service(1)
    x0, y0 = _take(_video(pattern, n), 7)  # 28 clips: more than two passes
    x1, y1 = _take(_video(pattern, n, service_address=address), 7)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(x1, x0)


def test_two_workers_validation_gives_the_same_multiset_of_clips(records, service, helpers):
    pattern, n = _textured_files(records)
    address = service(2)
    x0, y0 = helpers.collect(_video(pattern, n, split="validation"))
    x1, y1 = helpers.collect(_video(pattern, n, split="validation", service_address=address))
    assert len(y1) == len(y0) == n
    order0, order1 = np.argmax(y0, -1).argsort(), np.argmax(y1, -1).argsort()
    np.testing.assert_array_equal(y1[order1], y0[order0])
    np.testing.assert_array_equal(x1[order1], x0[order0])


def test_two_workers_training_draws_no_clip_twice(records, service):
    """Each worker restarts the random streams from the seed; the pass number folded into
    the augmentation seed keeps the passes the two workers make apart."""
    pattern, n = _textured_files(records)
    address = service(2)
    x, y = _take(_video(pattern, n, service_address=address), 8)  # 32 clips of 12 records
    flat = x.reshape(len(x), -1)
    assert len(np.unique(flat, axis=0)) == len(flat)
    assert set(np.argmax(y, -1).tolist()) == set(range(n))


def test_bad_examples_are_counted_and_reported_in_the_client(records, service, capfd):
    pattern, n = _textured_files(records, num_files=2, per_file=2)
    bad = records.write("bad.tfrecord", [b"not a proto", records.record(labels=(1,))])
    address = service(1)
    ds = _video([pattern, bad], n, split="validation", service_address=address)
    _, y = _take(ds, 10)
    assert len(y) == n + 1
    assert ds.error_counter.counts() == {"malformed_record": 1}
    assert "skipped bad input" in capfd.readouterr().err


def test_image_dataset_one_worker_gives_the_local_batches(records, service):
    rng = np.random.default_rng(1)
    recs = []
    for k in range(6):
        ex = tf.train.Example()
        pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        ex.features.feature["image/encoded"].bytes_list.value.append(
            data.writer.encode_jpeg(pixels))
        ex.features.feature["image/class/label"].int64_list.value.append(k + 1)  # 1-based
        recs.append(ex.SerializeToString())
    path = records.write("images.tfrecord", recs)
    address = service(1)
    kwargs = dict(dataset=None, num_classes=6, image_size=16, batch_size=3, seed=2)
    x0, y0 = _take(data.image_dataset(path, **kwargs), 3)
    x1, y1 = _take(data.image_dataset(path, service_address=address, **kwargs), 3)
    np.testing.assert_array_equal(y1, y0)
    np.testing.assert_array_equal(x1, x0)


def test_input_pipelines_with_one_job_name_each_get_their_own_files(records, service):
    """Two tf.distribute input pipelines, one `service_job_name`: each reads its own file
    shard through its own job (`NAME_<pipeline id>`), as in process."""
    pattern, n = _textured_files(records)
    address = service(1)
    for pipeline_id in (0, 1):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                         num_replicas_in_sync=2)
        kwargs = dict(split="validation", input_context=ctx, batch_size=2)
        x0, y0 = _take(_video(pattern, n, **kwargs), 10)
        x1, y1 = _take(_video(pattern, n, service_address=address, service_job_name="shared",
                              **kwargs), 10)
        assert len(y0) == n // 2
        np.testing.assert_array_equal(y1, y0)
        np.testing.assert_array_equal(x1, x0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(service_address=""), "service_address"),
        (dict(service_address="localhost:1", service_processing_mode="epochs"),
         "service_processing_mode='epochs'"),
        (dict(service_address="localhost:1", service_job_name=""), "service_job_name"),
    ],
)
def test_bad_service_arguments_raise_naming_them(records, kwargs, match):
    pattern, n = _textured_files(records, num_files=1, per_file=1)
    with pytest.raises(ValueError, match=match):
        _video(pattern, n, **kwargs)


@pytest.mark.slow
def test_runlocal_trains_through_two_workers_on_the_batches_of_the_local_pipeline(
    tmp_path, service
):
    """`kinetics.py --runlocal` trains a few steps with `data.service_address`; the task's
    training dataset (what the loop reads) through one worker is the local one, batch for
    batch."""
    from experiments import kinetics
    from tl_keras.train import tasks

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TL_KERAS_DATA_DIR=str(tmp_path / "data"))
    env.pop("TF_CONFIG", None)
    address = service(2)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "kinetics.py"), "--runlocal",
         f"--workdir={tmp_path / 'run'}", "--mode=train", "--set", "train.num_steps=4",
         "train.steps_per_loop=2", "train.log_every=2", f"data.service_address={address}"],
        env=env, capture_output=True, text=True, timeout=280,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "run" / "config.json") as f:
        assert json.load(f)["data"]["service_address"] == address
    assert tf.train.latest_checkpoint(str(tmp_path / "run" / "checkpoints")).endswith("-4")

    one = service(1)
    os.environ["TL_KERAS_DATA_DIR"] = env["TL_KERAS_DATA_DIR"]
    try:
        batches = []
        for addr in (None, one):
            cfg = kinetics.get_config(runlocal=True)
            cfg.data.service_address = addr
            tasks.resolve_data(cfg)
            ds = tasks.make_task(cfg).train_dataset_fn(None, 4)
            batches.append(_take(ds, 3))
    finally:
        del os.environ["TL_KERAS_DATA_DIR"]
    np.testing.assert_array_equal(batches[1][1], batches[0][1])
    np.testing.assert_array_equal(batches[1][0], batches[0][0])


@pytest.mark.slow
def test_benchmark_quick_runs():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "data_service.py"), "--quick"],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), capture_output=True, text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| service_")]
    assert len(rows) == 2 and "command: python benchmarks/data_service.py --quick" in proc.stdout
