"""video_dataset: splits, shapes, sampling, views, labels, file patterns, sharding, seeds."""

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data
from tl_keras.data import writer


def small(**kwargs):
    """Common small-clip arguments (frames are stored at 24 x 32)."""
    args = dict(num_classes=3, num_frames=4, stride=1, crop_size=16, min_resize=24, batch_size=2)
    args.update(kwargs)
    return args


def test_train_split_shapes_range_and_one_hot(records):
    pattern = records.dataset_files(num_files=2, per_file=3)
    ds = data.video_dataset(pattern, **small(), seed=0)
    assert ds.element_spec[0].shape.as_list() == [2, 4, 16, 16, 3]
    for x, y in ds.take(5):  # 10 clips from 6 videos: train repeats
        assert x.dtype == tf.float32 and x.shape == (2, 4, 16, 16, 3)
        assert -1.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
        np.testing.assert_array_equal(tf.reduce_sum(y, axis=1), [1.0, 1.0])


def test_train_clip_is_consecutive_frames_every_stride(records, helpers):
    frames = helpers.counting_frames(20)
    path = records.write("v.tfrecord", [records.record(frames, labels=(1,))])
    ds = data.video_dataset(
        path,
        **small(num_frames=5, stride=3, crop_size=24, batch_size=1),
        scale_jitter=None,
        flip=False,
        seed=1,
    )
    starts = set()
    for x, _ in ds.take(12):
        ids = helpers.frame_ids(x[0])
        np.testing.assert_array_equal(np.diff(ids), 3)
        assert ids[0] >= 0 and ids[-1] <= 19
        starts.add(ids[0])
    assert len(starts) > 1  # a random offset, not always the same clip


def test_validation_is_middle_clip_centre_crop_each_example_once(records, helpers):
    frames = helpers.counting_frames(10, height=24, width=40)
    frames[:, :, :8] = 255  # left band: would show up in the crop if it was not centred
    recs = [records.record(frames, labels=(k % 3,)) for k in range(5)]
    path = records.write("val.tfrecord", recs)
    ds = data.video_dataset(path, **small(split="validation", stride=2, crop_size=24))
    x, y = helpers.collect(ds)
    assert x.shape == (5, 4, 24, 24, 3)  # last partial batch kept for evaluation
    np.testing.assert_array_equal(y.argmax(1), [0, 1, 2, 0, 1])
    for clip in x:  # 10 frames, clip of 4 every 2: max_offset 10 - 8 = 2, middle 1
        np.testing.assert_array_equal(helpers.frame_ids(clip), [1, 3, 5, 7])


def test_test_split_views_are_crop_major(records):
    # 12 frames of 16 x 48: value = 4 + 4 * t + 60 * region, region = 16-px column band.
    t, h, w = 12, 16, 48
    frames = np.zeros((t, h, w, 3), np.uint8)
    for i in range(t):
        for region in range(3):
            frames[i, :, 16 * region : 16 * (region + 1)] = 4 + 4 * i + 60 * region
    path = records.write("test.tfrecord", [records.record(frames, labels=(2,))])
    ds = data.video_dataset(
        path,
        num_classes=3,
        split="test",
        num_frames=2,
        stride=1,
        crop_size=16,
        min_resize=16,
        num_clips=3,
        num_crops=3,
        batch_size=1,
    )
    x, y = next(iter(ds))
    assert x.shape == (1, 9, 2, 16, 16, 3)
    means = ((x[0].numpy() + 1) * 127.5).mean(axis=(2, 3, 4))  # [V, T]
    region = np.rint((means[:, 0] - 4 - 4 * np.rint((means[:, 0] % 60 - 4) / 4)) / 60)
    first_frame = np.rint((means[:, 0] - 4 - 60 * region) / 4)
    # 12 frames, clips of 2: offsets 0, 5, 10. view = crop * num_clips + clip.
    np.testing.assert_array_equal(region, [0, 0, 0, 1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(first_frame, [0, 5, 10] * 3)
    np.testing.assert_allclose(means[:, 1] - means[:, 0], 4, atol=1.5)
    np.testing.assert_array_equal(y, [[0, 0, 1]])


def test_test_split_single_view_has_no_view_axis(records):
    path = records.write("t.tfrecord", [records.record()])
    ds = data.video_dataset(path, **small(split="test", num_clips=1, num_crops=1))
    assert ds.element_spec[0].shape.as_list() == [None, 4, 16, 16, 3]


def test_segments_split_covers_each_video_and_tags_segments_with_its_id(records, helpers):
    # Videos of 3 (shorter than a segment), 4 (exactly one), 10 (2.5) and 8 (two) frames;
    # segments of 4 frames every 1.
    lengths, labels = (3, 4, 10, 8), (0, 1, 2, 1)
    recs = [records.record(helpers.counting_frames(n), labels=(k,)) for n, k in zip(lengths, labels)]
    recs.insert(1, records.record(labels=(7,)))  # a bad label: skipped and counted, no id
    path = records.write("seg.tfrecord", recs)
    ds = data.video_dataset(path, **small(split="segments", batch_size=3), log_skipped=False)
    assert [s.shape.as_list() for s in ds.element_spec] == [[None, 4, 16, 16, 3], [None, 3], [None]]
    batches = [tuple(t.numpy() for t in b) for b in ds]
    assert [len(b[0]) for b in batches] == [3, 3, 1]  # 7 segments, batched across videos
    x, y, ids = (np.concatenate(parts) for parts in zip(*batches))
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [0, 1, 2, 2, 2, 3, 3])
    np.testing.assert_array_equal(y.argmax(1), [0, 1, 2, 2, 2, 1, 1])
    frames = [helpers.frame_ids(clip).tolist() for clip in x]
    assert frames == [
        [0, 1, 2, 0],  # 3 frames: loops
        [0, 1, 2, 3],
        [0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9],  # 10 frames: offsets 0, 3, 6
        [0, 1, 2, 3], [4, 5, 6, 7],
    ]
    assert ds.error_counter.counts() == {"label_out_of_range": 1}


def test_segments_ids_are_unique_over_input_pipelines(records):
    pattern = records.dataset_files(num_files=2, per_file=3, num_classes=6, num_frames=6)
    seen = {}
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid)
        ds = data.video_dataset(
            pattern, **small(num_classes=6, split="segments", batch_size=4), input_context=ctx
        )
        for _, y, ids in ds:  # 6 frames: 2 segments per video
            for label, i in zip(y.numpy().argmax(1), ids.numpy()):
                seen.setdefault(int(i), set()).add(int(label))
    assert len(seen) == 6 and all(len(v) == 1 for v in seen.values())  # one video per id
    assert sorted(seen) == [0, 1, 2, 3, 4, 5]


def test_multilabel_multi_hot_and_single_label_takes_first(records):
    path = records.write("m.tfrecord", [records.record(labels=(0, 2)), records.record(labels=(1,))])
    multi = data.video_dataset(path, **small(split="validation", multilabel=True))
    _, y = next(iter(multi))
    np.testing.assert_array_equal(y, [[1, 0, 1], [0, 1, 0]])
    single = data.video_dataset(path, **small(split="validation"))
    _, y = next(iter(single))
    np.testing.assert_array_equal(y, [[1, 0, 0], [0, 1, 0]])


def test_label_offset_for_one_based_records(records):
    path = records.write("o.tfrecord", [records.record(labels=(1,)), records.record(labels=(3,))])
    ds = data.video_dataset(path, **small(split="validation", label_offset=1))
    _, y = next(iter(ds))
    np.testing.assert_array_equal(y, [[1, 0, 0], [0, 0, 1]])


def test_normalization_imagenet_mean_std(records, helpers):
    frames = np.full((4, 24, 24, 3), 128, np.uint8)
    path = records.write("n.tfrecord", [records.record(frames)])
    ds = data.video_dataset(
        path, **small(split="validation", crop_size=24), normalization="imagenet"
    )
    x, _ = next(iter(ds))
    expected = (128 / 255 - np.array(data.video_ops.IMAGENET_MEAN)) / np.array(
        data.video_ops.IMAGENET_STD
    )
    np.testing.assert_allclose(x.numpy().mean(axis=(0, 1, 2, 3)), expected, atol=0.03)


def test_custom_decoder_keys(records):
    ex = writer.make_sequence_example(
        records.jpegs(np.zeros((3, 24, 32, 3), np.uint8)),
        [2],
        image_key="frames/jpeg",
        label_key="y",
    )
    path = records.write("k.tfrecord", [ex.SerializeToString()])
    decoder = data.VideoDecoder(image_key="frames/jpeg", label_key="y")
    ds = data.video_dataset(path, **small(split="validation"), decoder=decoder)
    _, y = next(iter(ds))
    np.testing.assert_array_equal(y, [[0, 0, 1]])
    assert ds.error_counter.total == 0


def test_decoder_optional_fields(records):
    ex = writer.make_sequence_example(
        [b"a", b"b"],
        [4, 7],
        label_texts=["x", "y"],
        video_filename="vid.mp4",
        start_us=1_500_000,
        end_us=2_000_000,
    )
    out = data.VideoDecoder().decode(ex.SerializeToString())
    assert out["frames"].numpy().tolist() == [b"a", b"b"]
    assert out["labels"].numpy().tolist() == [4, 7]
    assert out["label_text"].numpy().tolist() == [b"x", b"y"]
    assert out["video_filename"].numpy() == b"vid.mp4"
    assert int(out["start_timestamp"]) == 1_500_000 and int(out["end_timestamp"]) == 2_000_000
    bare = data.VideoDecoder().decode(writer.make_sequence_example([b"a"], [1]).SerializeToString())
    assert bare["video_filename"].numpy() == b"" and int(bare["start_timestamp"]) == -1


# -- file patterns -------------------------------------------------------------------------------


def test_expand_file_pattern_glob_comma_shards_and_list(tmp_path):
    for name in ("a-00000-of-00002", "a-00001-of-00002", "b.tfrecord", "c.tfrecord"):
        (tmp_path / name).write_bytes(b"")
    d = str(tmp_path)
    shards = [f"{d}/a-00000-of-00002", f"{d}/a-00001-of-00002"]
    assert data.expand_file_pattern(f"{d}/a@2") == shards
    assert data.expand_file_pattern(f"{d}/*.tfrecord") == [f"{d}/b.tfrecord", f"{d}/c.tfrecord"]
    assert data.expand_file_pattern(f"{d}/c.tfrecord, {d}/a@2") == [f"{d}/c.tfrecord"] + shards
    assert data.expand_file_pattern([f"{d}/b.tfrecord", f"{d}/b.tfrecord"]) == [f"{d}/b.tfrecord"]


@pytest.mark.parametrize("pattern", ["", " , ", []])
def test_empty_pattern_raises_naming_it(pattern):
    with pytest.raises(ValueError, match="empty"):
        data.video_dataset(pattern, **small())
    with pytest.raises(ValueError, match=repr(pattern).replace("[", r"\[").replace("]", r"\]")):
        data.expand_file_pattern(pattern)


def test_pattern_matching_nothing_or_missing_raises_naming_it(tmp_path):
    glob = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(ValueError, match="matched no files") as err:
        data.video_dataset(glob, **small())
    assert glob in str(err.value)
    (tmp_path / "s-00000-of-00002").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="1 of the 2 shards") as err:
        data.video_dataset(str(tmp_path / "s@2"), **small())
    assert "s-00001-of-00002" in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.expand_file_pattern(str(tmp_path / "missing.tfrecord"))


# -- argument checks -----------------------------------------------------------------------------


def test_crop_larger_than_resized_frame_names_both_values(records):
    path = records.write("x.tfrecord", [records.record()])
    with pytest.raises(ValueError, match=r"crop_size=40.*min_resize=32"):
        data.video_dataset(path, **small(crop_size=40, min_resize=32))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(split="eval"), "split='eval'"),
        (dict(on_error="ignore"), "on_error='ignore'"),
        (dict(num_crops=2, split="test"), "num_crops=2"),
        (dict(num_clips=4, split="validation"), "only for split='test'"),
        (dict(num_clips=2, split="segments"), "num_clips=2: split='segments'"),
        (dict(num_classes=None), "num_classes is required"),
        (dict(num_frames=0), "num_frames=0"),
        (dict(batch_size=0), "batch_size=0"),
    ],
)
def test_bad_arguments_raise(records, kwargs, match):
    path = records.write("x.tfrecord", [records.record()])
    with pytest.raises(ValueError, match=match):
        data.video_dataset(path, **small(**kwargs))


def test_registered_dataset_fills_defaults(records):
    pattern = records.dataset_files(num_files=1, per_file=2)
    ds = data.video_dataset(
        pattern,
        dataset="charades",
        split="validation",
        num_frames=2,
        crop_size=16,
        min_resize=24,
        batch_size=2,
    )
    x, y = next(iter(ds))
    assert y.shape == (2, 157)  # charades: 157 classes
    test = data.video_dataset(
        pattern,
        dataset="kinetics400",
        split="test",
        num_frames=2,
        crop_size=16,
        min_resize=24,
        batch_size=1,
    )
    x, y = next(iter(test))
    assert x.shape == (1, 12, 2, 16, 16, 3) and y.shape == (1, 400)  # 4 clips x 3 crops


# -- sharding, shuffling, seeds ------------------------------------------------------------------


def _labels(ds):
    return [int(i) for _, y in ds for i in np.argmax(y.numpy(), axis=1)]


def test_input_context_shards_by_file(records):
    pattern = records.dataset_files(num_files=4, per_file=2, num_classes=8)
    seen = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2
        )
        ds = data.video_dataset(
            pattern, **small(num_classes=8, split="validation", batch_size=4), input_context=ctx
        )
        assert ds.element_spec[0].shape[0] in (None, 2)  # per-replica batch = 4 / 2
        seen.append(sorted(_labels(ds)))
    assert seen == [[0, 1, 4, 5], [2, 3, 6, 7]]  # files 0, 2 and 1, 3


def test_input_context_with_fewer_files_than_pipelines_shards_records(records):
    pattern = records.dataset_files(num_files=1, per_file=6, num_classes=6)
    parts = []
    for pid in range(3):
        ctx = tf.distribute.InputContext(num_input_pipelines=3, input_pipeline_id=pid)
        parts.append(
            _labels(
                data.video_dataset(
                    pattern, **small(num_classes=6, split="validation"), input_context=ctx
                )
            )
        )
    assert sorted(sum(parts, [])) == list(range(6)) and all(len(p) == 2 for p in parts)


def test_seed_makes_training_reproducible_and_epochs_differ(records):
    pattern = records.dataset_files(num_files=2, per_file=4, num_classes=8)

    def first(seed, n=4):
        ds = data.video_dataset(pattern, **small(num_classes=8, batch_size=8), seed=seed)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]

    a, b, c = first(3), first(3), first(4)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    # Every batch is one full epoch of 8 videos: shuffled differently from epoch to epoch.
    orders = {tuple(y.argmax(1)) for _, y in a}
    assert all(sorted(o) == list(range(8)) for o in orders) and len(orders) > 1


def test_distribute_datasets_from_function_under_strategy_scope(records):
    pattern = records.dataset_files(num_files=2, per_file=2, num_classes=4)
    bad = records.write("bad.tfrecord", [records.record(labels=(9,))])
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    counters = []

    def dataset_fn(ctx):
        ds = data.video_dataset(
            [pattern, bad],
            **small(num_classes=4, split="validation", batch_size=2),
            input_context=ctx,
        )
        counters.append(ds.error_counter)
        return ds

    with strategy.scope():
        dist = strategy.distribute_datasets_from_function(dataset_fn)
        n = sum(int(strategy.experimental_local_results(y)[0].shape[0]) for _, y in dist)
    assert n == 4
    assert counters[0].counts() == {"label_out_of_range": 1}
