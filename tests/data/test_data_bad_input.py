"""Bad input: each case is skipped and counted (on_error="skip") or raises naming the file and
the reason (on_error="raise"); the good examples around it are all delivered."""

import logging
import time

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data

NUM_CLASSES = 5


def read(path_or_paths, *, on_error="skip", split="validation", **kwargs):
    args = dict(
        num_classes=NUM_CLASSES,
        num_frames=4,
        stride=1,
        crop_size=16,
        min_resize=24,
        batch_size=3,
        split=split,
        on_error=on_error,
    )
    args.update(kwargs)
    return data.video_dataset(path_or_paths, **args)


def labels_of(ds):
    return sorted(int(i) for _, y in ds for i in np.argmax(y.numpy(), axis=1))


def huge_header(jpeg: bytes, height=60000, width=60000) -> bytes:
    """The same JPEG with its SOF0 header claiming `height x width` pixels."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[i + 9 :]


@pytest.fixture
def good_file(records):
    """A file of 3 good examples with labels 0, 1, 2."""
    return records.write("good.tfrecord", [records.record(labels=(k,)) for k in range(3)])


def bad_records(records):
    """Builders for each bad-record case: name -> (serialized record, expected reason key)."""
    jpegs = records.jpegs(np.full((4, 24, 32, 3), 100, np.uint8))
    no_label = records.record(labels=())
    return {
        "garbage_jpeg": (
            records.record(jpegs[:2] + [b"\xff\xd8not a jpeg"] + jpegs[3:], labels=(4,)),
            "corrupt_jpeg",
        ),
        "truncated_jpeg": (
            records.record(jpegs[:1] + [jpegs[1][: len(jpegs[1]) // 2]] + jpegs[2:], labels=(4,)),
            "corrupt_jpeg",
        ),
        "no_frames": (records.record([], labels=(4,)), "no_frames"),
        "missing_label_key": (no_label, "missing_label"),
        "label_too_big": (records.record(labels=(NUM_CLASSES,)), "label_out_of_range"),
        "label_negative": (records.record(labels=(-1,)), "label_out_of_range"),
        "one_of_two_labels_bad": (records.record(labels=(1, 7)), "label_out_of_range"),
        "huge_jpeg_header": (
            records.record([huge_header(j) for j in jpegs], labels=(4,)),
            "too_many_pixels",
        ),
        "not_a_proto": (b"\x0a\xff\xff\xff\xff garbage", "malformed_record"),
    }


CASES = [
    "garbage_jpeg",
    "truncated_jpeg",
    "no_frames",
    "missing_label_key",
    "label_too_big",
    "label_negative",
    "one_of_two_labels_bad",
    "huge_jpeg_header",
    "not_a_proto",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_record_is_skipped_counted_and_logged(records, good_file, case, capfd):
    record, reason = bad_records(records)[case]
    bad = records.write(
        "bad.tfrecord", [records.record(labels=(3,)), record, records.record(labels=(4,))]
    )
    ds = read([good_file, bad])
    assert labels_of(ds) == [0, 1, 2, 3, 4]  # everything but the bad example
    assert ds.error_counter.counts() == {reason: 1}
    assert ds.error_counter.files() == {bad: 1}
    err = capfd.readouterr().err
    assert f"record 1 of file {bad}" in err and "skipped bad input" in err
    assert "end of a pass over the data; skipped 1 bad examples so far" in err


@pytest.mark.parametrize("case", CASES)
def test_bad_record_raises_naming_file_and_reason(records, good_file, case):
    record, reason = bad_records(records)[case]
    bad = records.write("bad.tfrecord", [record])
    message = data.errors.REASONS[getattr(data.Status, reason.upper())][1]
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        labels_of(read([good_file, bad], on_error="raise"))
    assert f"record 0 of file {bad}" in str(err.value)
    assert message in str(err.value)


def test_bad_records_are_also_caught_in_the_training_split(records, good_file):
    bad = records.write("bad.tfrecord", [r for r, _ in bad_records(records).values()])
    ds = read([good_file, bad], split="train", repeat=False, batch_size=1, seed=0)
    assert labels_of(ds) == [0, 1, 2]
    assert ds.error_counter.total == len(CASES)


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_damaged_tfrecord_keeps_records_before_the_damage(records, good_file, damage, capfd):
    path = records.write(
        "damaged.tfrecord", [records.record(labels=(k % NUM_CLASSES,)) for k in range(5)]
    )
    sizes = [len(r) + 16 for r in tf.data.TFRecordDataset(path).as_numpy_iterator()]
    blob = bytearray(open(path, "rb").read())
    cut = sum(sizes[:3]) + sizes[3] // 2  # inside the 4th record
    if damage == "truncate":
        blob = blob[:cut]
    else:
        blob[cut] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    ds = read([good_file, path])
    assert labels_of(ds) == [0, 0, 1, 1, 2, 2]  # good 0,1,2 + damaged file's first three
    assert ds.error_counter.counts() == {"truncated_file": 1}
    assert ds.error_counter.files() == {path: 1}
    assert f"of file {path}: truncated or corrupt TFRecord file" in capfd.readouterr().err
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="truncated or corrupt TFRecord"
    ) as err:
        labels_of(read([good_file, path], on_error="raise"))
    assert path in str(err.value)


def test_absurd_number_of_frames_decodes_only_the_sampled_ones(records):
    # 20000 frames, all garbage except the 4 of the middle clip: decoding any other frame
    # would fail; the example must come through, quickly.
    n, t = 20_000, 4
    good = records.jpegs(np.full((1, 24, 32, 3), 77, np.uint8))[0]
    middle = (n - t) // 2
    frames = [good if middle <= i < middle + t else b"x" for i in range(n)]
    path = records.write("long.tfrecord", [records.record(frames, labels=(2,))])
    start = time.perf_counter()
    ds = read(path)
    assert labels_of(ds) == [2]
    assert ds.error_counter.total == 0
    # Training split: random clip of a 20000-frame video of valid frames.
    long_valid = records.write("long2.tfrecord", [records.record([good] * n, labels=(1,))])
    ds = read(long_valid, split="train", repeat=False, batch_size=1, seed=0)
    assert labels_of(ds) == [1]
    assert time.perf_counter() - start < 30


def test_pixel_limit_is_configurable(records, good_file):
    # Frames are 24 x 32 = 768 pixels: a 700-pixel limit makes every example bad, and a
    # pass without a good example is an error.
    ds = read(good_file, max_frame_pixels=700, log_skipped=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="too_many_pixels=3"):
        labels_of(ds)
    assert ds.error_counter.counts() == {"too_many_pixels": 3}
    assert labels_of(read(good_file, max_frame_pixels=768)) == [0, 1, 2]


def test_counter_is_shared_reset_and_logged(records, good_file, caplog):
    counter = data.ErrorCounter()
    bad = records.write("bad.tfrecord", [records.record(labels=(9,))])
    for _ in range(2):
        labels_of(read([good_file, bad], error_counter=counter, log_skipped=False))
    assert counter.counts() == {"label_out_of_range": 2} and counter.total == 2
    with caplog.at_level(logging.WARNING, logger="tl_keras.data"):
        counter.log()
    assert "skipped 2 bad examples: label_out_of_range=2" in caplog.text
    counter.reset()
    assert counter.counts() == {} and counter.total == 0


def test_counter_survives_losing_python_references(records, good_file):
    import gc

    bad = records.write("bad.tfrecord", [records.record(labels=(9,))])
    ds = read([good_file, bad], log_skipped=False)
    counter = ds.error_counter
    ds = ds.map(lambda x, y: (x, y))  # a derived dataset has no error_counter attribute
    gc.collect()
    assert labels_of(ds) == [0, 1, 2]
    assert counter.total == 1


def test_empty_file_is_not_an_error(records, good_file):
    empty = records.write("empty.tfrecord", [])
    ds = read([good_file, empty])
    assert labels_of(ds) == [0, 1, 2] and ds.error_counter.total == 0


# -- frames of different sizes in one video ---------------------------------------------------

SPLITS = ("train", "validation", "test")


def mixed_size_record(records, large_first, label=4):
    """6 frames alternating 24x32 and 48x64 (same aspect ratio), the larger first or not."""
    small = records.jpegs(np.full((1, 24, 32, 3), 90, np.uint8))[0]
    large = records.jpegs(np.full((1, 48, 64, 3), 90, np.uint8))[0]
    pair = [large, small] if large_first else [small, large]
    return records.record(pair * 3, labels=(label,))


@pytest.mark.parametrize("large_first", [False, True], ids=["small_first", "large_first"])
def test_mixed_frame_sizes_are_skipped_under_their_own_reason(records, good_file, large_first):
    bad = records.write("mixed.tfrecord", [mixed_size_record(records, large_first)])
    for split in SPLITS:
        ds = read(
            [good_file, bad], split=split, repeat=False, batch_size=1, seed=0, log_skipped=False
        )
        assert labels_of(ds) == [0, 1, 2], split
        assert ds.error_counter.counts() == {"mixed_frame_sizes": 1}, split
        assert ds.error_counter.files() == {bad: 1}, split
    # Training: every random start is rejected the same way, pass after pass.
    ds = read([good_file, bad], split="train", batch_size=1, log_skipped=False)
    assert sorted(int(np.argmax(y)) for _, y in ds.take(9)) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.error_counter.counts()["mixed_frame_sizes"] >= 2


@pytest.mark.parametrize("large_first", [False, True], ids=["small_first", "large_first"])
def test_mixed_frame_sizes_raise_naming_record_and_reason(records, good_file, large_first):
    bad = records.write("mixed.tfrecord", [mixed_size_record(records, large_first)])
    message = data.errors.REASONS[data.Status.MIXED_FRAME_SIZES][1]
    for split in SPLITS:
        with pytest.raises(tf.errors.InvalidArgumentError) as err:
            labels_of(read([good_file, bad], split=split, repeat=False, on_error="raise"))
        assert f"record 0 of file {bad}: {message}" in str(err.value), split


def test_size_change_outside_the_sampled_frames_is_not_an_error(records, helpers):
    # 10 frames: the middle clip (frames 3-6) is 24x32, the first and last frames are larger.
    frames = helpers.counting_frames(10)
    jpegs = records.jpegs(frames)
    large = records.jpegs(np.full((1, 48, 64, 3), 90, np.uint8))[0]
    path = records.write("edges.tfrecord", [records.record([large] + jpegs[1:9] + [large])])
    ds = read(path, log_skipped=False)
    videos, _ = helpers.collect(ds)
    assert helpers.frame_ids(videos).tolist() == [[3, 4, 5, 6]]
    assert ds.error_counter.total == 0


# -- a pass that yields no good example -----------------------------------------------------------


def random_bytes_file(tmp_path, name="random.tfrecord", size=4096):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def zero_byte_file(tmp_path, name="zero.tfrecord"):
    path = str(tmp_path / name)
    open(path, "wb").close()
    return path


def first_batch_error(ds):
    """The error `next()` raises on the dataset (bounded: the test timeout)."""
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        next(iter(ds))
    return str(err.value)


@pytest.mark.parametrize("split", ["train", "validation"])
@pytest.mark.parametrize("on_error", ["skip", "raise"])
def test_random_bytes_only_raises_after_one_pass(tmp_path, split, on_error):
    path = random_bytes_file(tmp_path)
    start = time.perf_counter()
    ds = read(path, split=split, on_error=on_error, log_skipped=False)
    message = first_batch_error(ds)
    if on_error == "skip":
        assert f"a full pass over the data yielded no good example (1 file: {path};" in message
        assert f"skipped 1 bad examples so far: truncated_file=1 (by file: {path}=1)" in message
        # One pass, not thousands (parallel stages may have run a few passes ahead).
        assert 1 <= ds.error_counter.counts()["truncated_file"] < 50
    else:
        assert f"record 0 of file {path}: truncated or corrupt TFRecord file" in message
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("split", ["train", "validation"])
def test_zero_byte_shards_only_raise_naming_them(tmp_path, split, caplog):
    paths = [zero_byte_file(tmp_path, f"zero-{i}.tfrecord") for i in range(2)]
    with caplog.at_level(logging.WARNING, logger="tl_keras.data"):
        ds = read(paths, split=split)
    assert f"2 of 2 files are empty (0 bytes, no records), e.g. {paths[0]}" in caplog.text
    message = first_batch_error(ds)
    assert f"no good example (2 files: {paths[0]}, {paths[1]}; 0 records in the pass)" in message
    assert "skipped 0 bad examples so far" in message


def test_zero_byte_and_random_bytes_shards_together_raise(tmp_path):
    paths = [zero_byte_file(tmp_path), random_bytes_file(tmp_path)]
    ds = read(paths, split="train", log_skipped=False)
    message = first_batch_error(ds)
    assert "no good example (2 files:" in message and "truncated_file=1" in message


def test_random_bytes_and_zero_byte_shards_among_good_ones_are_counted_per_pass(
    tmp_path, good_file, capfd
):
    paths = [good_file, random_bytes_file(tmp_path), zero_byte_file(tmp_path)]
    ds = read(paths, log_skipped=False)
    assert labels_of(ds) == [0, 1, 2]
    assert ds.error_counter.counts() == {"truncated_file": 1}
    assert ds.error_counter.files() == {paths[1]: 1}
    assert "end of a pass over the data; skipped 1 bad examples so far" in capfd.readouterr().err


def test_every_record_bad_in_training_raises_with_the_counts(records):
    path = records.write("bad.tfrecord", [records.record(labels=(9,)) for _ in range(3)])
    ds = read(path, split="train", log_skipped=False)
    message = first_batch_error(ds)
    assert f"skipped 3 bad examples so far: label_out_of_range=3 (by file: {path}=3)" in message


def track(elements):
    """Run `pipeline._track_passes` over hand-made `(pass, status, index)` elements."""
    from tl_keras.data import pipeline

    p, status, index = (np.array(c, np.int64) for c in zip(*elements))
    ds = tf.data.Dataset.from_tensor_slices(
        {
            "pass": p,
            "status": status.astype(np.int32),
            "index": index,
            "filename": np.array(["f"] * len(p)),
        }
    )
    ds = pipeline._track_passes(
        ds, counter=data.ErrorCounter(), source="1 file: f", on_error="skip"
    )
    return [int(e["status"]) for e in ds]


def test_pass_tracking_waits_for_every_example_of_a_pass():
    ok, bad, end = data.Status.OK, data.Status.LABEL_OUT_OF_RANGE, data.Status.END_OF_PASS
    # The parallel parse may deliver a pass's end marker (index = its number of examples)
    # before its examples, and examples of the next passes in between.
    overtaken = [
        (0, bad, 0),
        (0, end, 2),
        (1, bad, 0),
        (1, end, 2),
        (2, bad, 0),
        (0, ok, 0),
        (1, ok, 0),
        (2, end, 2),
        (2, ok, 0),
    ]
    assert len(track(overtaken)) == len(overtaken)
    for stream in (
        [(0, bad, 0), (0, end, 2), (1, ok, 0), (0, bad, 0)],  # pass 0 complete, no good one
        [(0, end, 0)],  # a pass with no examples at all
        [(0, ok, 0), (0, ok, 0), (0, end, 2), (1, end, 0)],  # the second pass is empty
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match="no good example"):
            track(stream)


@pytest.mark.parametrize("num_bad", [0, 20])
def test_slow_good_example_among_fast_bad_ones_never_raises(records, num_bad):
    # The end-of-pass marker and bad records need no decoding and may overtake a slow good
    # example in the unordered parallel parse: a pass is judged only once all of it is seen.
    good = records.record(labels=(1,), num_frames=8, height=480, width=640)
    path = records.write("slow.tfrecord", [good] + [records.record(labels=(9,))] * num_bad)
    ds = read(
        path,
        split="train",
        batch_size=1,
        log_skipped=False,
        deterministic=False,
        crop_size=224,
        min_resize=480,
        scale_jitter=None,
    )
    assert [int(np.argmax(y)) for _, y in ds.take(4)] == [1] * 4


def test_a_directory_in_the_pattern_is_an_error(tmp_path, good_file):
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="is a directory, not a TFRecord file") as err:
        read([good_file, str(tmp_path / "sub")])
    assert str(tmp_path / "sub") in str(err.value)


@pytest.mark.parametrize("split", ["train", "validation"])
def test_grouped_parse_gives_the_elements_of_the_one_by_one_parse(records, monkeypatch, split):
    """Small examples are parsed in groups (`pipeline._group_size`); a group in which one
    example raises is parsed again one by one. Same clips, order, labels and counts as the
    one-by-one parse, whatever the bad example and wherever it sits in a group."""
    from tl_keras.data import pipeline

    bad = [r for r, _ in bad_records(records).values()]
    # Good and bad records interleaved (one bad record per 5 good ones), then 20 good
    # ones: groups of 16 with bad examples in various places and groups without any.
    mixed = []
    for k in range(40):
        mixed.append(records.record(labels=(k % NUM_CLASSES,)))
        if k % 5 == 2:
            mixed.append(bad[(k // 5) % len(bad)])
    mixed += [records.record(labels=(k % NUM_CLASSES,)) for k in range(20)]  # an all-good group
    path = records.write("mixed.tfrecord", mixed)

    def run():
        ds = read(path, split=split, batch_size=4, seed=3, repeat=False, log_skipped=False)
        batches = [(x.numpy(), y.numpy()) for x, y in ds]
        return batches, ds.error_counter.counts()

    assert pipeline._group_size([4, 16, 16, 3], "float32") == pipeline._MAX_GROUP
    grouped, grouped_counts = run()
    monkeypatch.setattr(pipeline, "_GROUP_BYTES", 0)  # every example on its own
    assert pipeline._group_size([4, 16, 16, 3], "float32") == 1
    alone, alone_counts = run()
    assert grouped_counts == alone_counts and sum(alone_counts.values()) == 8
    assert len(grouped) == len(alone) == 15  # the 60 good examples in batches of 4
    for (gx, gy), (ax, ay) in zip(grouped, alone):
        np.testing.assert_array_equal(gx, ax)
        np.testing.assert_array_equal(gy, ay)


def test_group_size_follows_the_output_bytes():
    from tl_keras.data import pipeline

    assert pipeline._group_size([32, 224, 224, 3], "uint8") == 1  # a Kinetics clip: 4.8 MB
    assert pipeline._group_size([None, 4, 28, 28, 3], "uint8") == 1  # segments: any count
    assert pipeline._group_size([224, 224, 3], "float32") == 1  # 602 kB
    assert pipeline._group_size([8, 64, 64, 3], "uint8") == 10  # 98 kB
    assert pipeline._group_size([4, 28, 28, 3], "uint8") == pipeline._MAX_GROUP
