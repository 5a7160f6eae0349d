"""Writer / tools/make_tfrecords.py: real encoded videos -> TFRecords -> video_dataset;
environment failures (no decoder, no video root) found first and marking nothing finished."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_noise import noise_lines
from tl_keras import data
from tl_keras.data import writer

try:
    import av
except ImportError:
    av = None
# Applied to every test that encodes videos; the others run without PyAV.
needs_av = pytest.mark.skipif(av is None, reason='PyAV not installed: pip install -e ".[video]"')

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T, H, W, FPS = 20, 48, 64, 10


def known_frames(num=T, height=H, width=W):
    """Frame t: red = 10 + 12 t, blue = 240 - 12 t, green 60 with a 200 top-left quadrant."""
    frames = np.zeros((num, height, width, 3), np.uint8)
    frames[..., 0] = (10 + 12 * np.arange(num))[:, None, None]
    frames[..., 1] = 60
    frames[:, : height // 2, : width // 2, 1] = 200
    frames[..., 2] = (240 - 12 * np.arange(num))[:, None, None]
    return frames


def write_video(path, frames, codec, fps=FPS):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 5_000_000  # near-lossless, so the test measures our errors
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "start", "end", "labels"])
        w.writerows(rows)
    return str(path)


def write_classes(path, names):
    path.write_text("\n".join(names) + "\n")
    return str(path)


def stored(pattern):
    """Decoded records of all shards of `pattern`: list of dicts with numpy values."""
    out = []
    decoder = data.VideoDecoder()
    for f in data.expand_file_pattern(pattern):
        for r in tf.data.TFRecordDataset(f):
            out.append({k: v.numpy() for k, v in decoder.decode(r).items()})
    return out


@pytest.fixture
def videos(tmp_path):
    if av is None:
        pytest.skip('PyAV not installed: pip install -e ".[video]"')
    root = tmp_path / "videos"
    root.mkdir()
    frames = known_frames()
    return {
        "root": str(root),
        "frames": frames,
        "mp4": write_video(root / "a.mp4", frames, "mpeg4"),
        "avi": write_video(root / "b.avi", frames, "mjpeg"),
    }


@pytest.mark.parametrize("name", ["mp4", "avi"])
def test_round_trip_frames_match_within_jpeg_tolerance(tmp_path, videos, name):
    classes = write_classes(tmp_path / "classes.txt", ["walk", "run", "jump"])
    rows = [[os.path.basename(videos[name]), "", "", "jump"]]
    result = writer.convert_videos(
        write_csv(tmp_path / "x.csv", rows),
        classes,
        str(tmp_path / "out" / "train"),
        video_root=videos["root"],
        num_shards=1,
        min_resize=H,
        num_workers=0,
        progress=False,
    )
    assert result.num_examples == 1 and not result.failures
    ds = data.video_dataset(
        str(tmp_path / "out" / "train@1"),
        num_classes=3,
        split="validation",
        num_frames=T,
        stride=1,
        crop_size=H,
        min_resize=H,
        batch_size=1,
    )
    x, y = next(iter(ds))
    np.testing.assert_array_equal(y, [[0, 0, 1]])
    got = (x[0].numpy() + 1.0) * 127.5  # [T, 48, 48, 3]
    crop = slice((W - H) // 2, (W + H) // 2)  # centre crop of the 48 x 64 frames
    # Against the frames PyAV decodes (what was JPEG-encoded): only the JPEG error is left.
    decoded = writer.decode_video(videos[name])[:, :, crop].astype(np.float32)
    assert decoded.shape == (T, H, H, 3)
    assert np.abs(got - decoded).mean(axis=(1, 2, 3)).max() < 3
    # Against the frames put into the video file: video codec + JPEG error.
    want = videos["frames"][:, :, crop].astype(np.float32)
    per_frame = np.abs(got - want).mean(axis=(1, 2, 3))
    assert per_frame.max() < 6, per_frame
    # Order: every decoded frame is closest to the original frame with the same index.
    dist = np.abs(got[:, None] - want[None]).mean(axis=(2, 3, 4))  # [T, T]
    np.testing.assert_array_equal(dist.argmin(axis=1), np.arange(T))


def test_time_range_fps_resize_labels_and_context(tmp_path, videos):
    classes = write_classes(tmp_path / "classes.txt", ["zebra", "apple", "mango"])
    rows = [[videos["mp4"], "0.5", "1.5", "mango;zebra"]]  # absolute path, multi-label
    out = str(tmp_path / "out" / "clip")
    writer.convert_videos(
        write_csv(tmp_path / "x.csv", rows),
        classes,
        out,
        fps=5,
        min_resize=24,
        num_workers=0,
        progress=False,
    )
    (rec,) = stored(out + "@1")
    assert rec["labels"].tolist() == [2, 0]  # class-list order, as listed in the CSV
    assert rec["label_text"].tolist() == [b"mango", b"zebra"]
    assert rec["video_filename"] == videos["mp4"].encode()
    assert (rec["start_timestamp"], rec["end_timestamp"]) == (500_000, 1_500_000)
    frames = np.stack([tf.io.decode_jpeg(j).numpy() for j in rec["frames"]])
    assert frames.shape == (5, 24, 32, 3)  # [0.5, 1.5) s at 5 fps, short side 24
    red = frames[..., 0].mean(axis=(1, 2))
    np.testing.assert_array_equal(np.rint((red - 10) / 12), [5, 7, 9, 11, 13])  # which frames


def test_failed_videos_are_reported_and_the_rest_written(tmp_path, videos):
    (tmp_path / "videos" / "corrupt.mp4").write_bytes(os.urandom(3000))
    classes = write_classes(tmp_path / "classes.txt", ["a", "b"])
    rows = [
        ["a.mp4", "", "", "a"],
        ["corrupt.mp4", "", "", "b"],
        ["b.avi", "", "", "b"],
        ["missing.mp4", "1", "2", "a;b"],
        ["a.mp4", "0", "0.5", "b"],
    ]
    out = str(tmp_path / "out" / "train")
    result = writer.convert_videos(
        write_csv(tmp_path / "x.csv", rows),
        classes,
        out,
        video_root=videos["root"],
        num_shards=2,
        min_resize=24,
        num_workers=0,
        progress=False,
    )
    assert result.num_examples == 3
    assert sorted(len(r["frames"]) for r in stored(out + "@2")) == [5, 20, 20]
    with open(result.report_path) as f:
        report = list(csv.DictReader(f))
    assert result.report_path == str(tmp_path / "out" / "failed_train.csv")
    assert [r["path"] for r in report] == ["corrupt.mp4", "missing.mp4"]
    assert "does not exist" in report[1]["error"] and report[1]["labels"] == "a;b"
    assert report[0]["error"]  # the decoder's message


def test_unknown_label_fails_fast_naming_line_and_label(tmp_path, videos):
    classes = write_classes(tmp_path / "classes.txt", ["a"])
    csv_path = write_csv(tmp_path / "x.csv", [["a.mp4", "", "", "a"], ["a.mp4", "", "", "zzz"]])
    with pytest.raises(ValueError, match=r"line 3: 'zzz'"):
        writer.convert_videos(csv_path, classes, str(tmp_path / "o"), num_workers=0, progress=False)


def test_resume_keeps_finished_shards(tmp_path, videos, monkeypatch):
    classes = write_classes(tmp_path / "classes.txt", ["a", "b"])
    rows = [
        ["a.mp4", "", "", "a"],
        ["b.avi", "", "", "b"],
        ["a.mp4", "0", "1", "b"],
        ["b.avi", "1", "2", "a"],
        ["a.mp4", "1", "2", "a"],
        ["b.avi", "0", "1", "b"],
    ]
    csv_path = write_csv(tmp_path / "x.csv", rows)
    out = str(tmp_path / "out" / "train")
    calls = []
    real = writer._video_example
    monkeypatch.setattr(
        writer, "_video_example", lambda row, *a, **k: calls.append(row) or real(row, *a, **k)
    )

    def run():
        calls.clear()
        return writer.convert_videos(
            csv_path,
            classes,
            out,
            video_root=videos["root"],
            num_shards=3,
            min_resize=24,
            num_workers=0,
            progress=False,
        )

    first = run()
    assert len(calls) == 6 and len(first.written) == 3
    before = {p: open(p, "rb").read() for p in first.shards}
    os.remove(first.shards[1])  # as if the run was killed before this shard was renamed
    second = run()
    assert second.written == [first.shards[1]] and second.kept == [first.shards[0], first.shards[2]]
    assert len(calls) == 2 and second.num_examples == 6
    assert {p: open(p, "rb").read() for p in second.shards} == before  # same content
    third = run()
    assert calls == [] and third.written == [] and len(third.kept) == 3
    # Changed rows (or options) invalidate the affected shards only.
    rows[0][3] = "b"
    write_csv(tmp_path / "x.csv", rows)
    fourth = run()
    assert len(fourth.written) == 1 and len(calls) == 2


def test_cli_parallel_workers(tmp_path, videos):
    classes = write_classes(tmp_path / "classes.txt", ["a", "b"])
    rows = [["a.mp4", "", "", "a"], ["b.avi", "", "", "b"], ["nope.mp4", "", "", "a"]]
    csv_path = write_csv(tmp_path / "x.csv", rows)
    out = str(tmp_path / "out" / "train")
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "make_tfrecords.py"),
        f"--csv={csv_path}",
        f"--class_list={classes}",
        f"--video_root={videos['root']}",
        f"--output={out}",
        "--num_shards=2",
        "--num_workers=2",
        "--min_resize=24",
        "--no_progress",
    ]
    # As a user's shell: the worker processes start TensorFlow without its start-up lines too.
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TL_KERAS_SHOW_STARTUP")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 examples in 2 shards" in proc.stdout and "1 videos failed" in proc.stdout
    assert not noise_lines(proc.stderr), proc.stderr[-2000:]
    assert sorted(r["labels"].tolist() for r in stored(out + "@2")) == [[0], [1]]


def load_tool():
    """`tools/make_tfrecords.py` as a module (its `main(argv)` runs in this process)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_tfrecords", os.path.join(REPO, "tools", "make_tfrecords.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


@needs_av
def test_cli_reports_bad_arguments(tmp_path, capsys):
    tool = load_tool()
    classes = write_classes(tmp_path / "classes.txt", ["a"])
    code = tool.main(
        [
            f"--csv={tmp_path / 'none.csv'}",
            f"--class_list={classes}",
            f"--output={tmp_path / 'out'}",
            "--no_progress",
        ]
    )
    assert code == 2 and "none.csv" in capsys.readouterr().err


def without_decoder(monkeypatch):
    """As if PyAV were not installed: `import av` raises ImportError."""
    monkeypatch.setitem(sys.modules, "av", None)


def test_missing_decoder_or_root_fails_before_any_work(tmp_path, monkeypatch, capsys):
    classes = write_classes(tmp_path / "classes.txt", ["a"])
    csv_path = write_csv(tmp_path / "x.csv", [["a.mp4", "", "", "a"]])
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        without_decoder(m)
        with pytest.raises(writer.ConversionEnvironmentError, match=r"PyAV.*pip install"):
            writer.convert_videos(csv_path, classes, str(out / "train"), progress=False)
        assert load_tool().main([f"--csv={csv_path}", f"--class_list={classes}",
                                 f"--output={out / 'train'}", "--no_progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install -e ".[video]"' in err, err
    if av is not None:  # the root is checked after the decoder
        with pytest.raises(writer.ConversionEnvironmentError, match="video_root .*nowhere"):
            writer.convert_videos(csv_path, classes, str(out / "train"),
                                  video_root=str(tmp_path / "nowhere"), progress=False)
    assert not out.exists()  # no output folder, state or report


def test_help_does_not_import_tensorflow():
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['make_tfrecords.py', '--help']\n"
        "try:\n"
        f"    runpy.run_path({os.path.join(REPO, 'tools', 'make_tfrecords.py')!r}, "
        "run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TF' if 'tensorflow' in sys.modules else 'no TF')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("no TF")
    assert 'pip install -e ".[video]"' in proc.stdout and "--max_failures" in proc.stdout


SIX_ROWS = [["a.mp4", "", "", "a"], ["b.avi", "", "", "b"], ["a.mp4", "0", "1", "b"],
            ["b.avi", "1", "2", "a"], ["a.mp4", "1", "2", "a"], ["b.avi", "0", "1", "b"]]


def convert(tmp_path, root, **kwargs):
    return writer.convert_videos(
        str(tmp_path / "x.csv"), str(tmp_path / "classes.txt"), str(tmp_path / "out" / "train"),
        video_root=root, num_shards=3, min_resize=24, num_workers=0, progress=False, **kwargs)


def test_decoder_lost_mid_run_marks_nothing_finished_and_rerun_gets_every_example(
        tmp_path, videos, monkeypatch):
    write_classes(tmp_path / "classes.txt", ["a", "b"])
    write_csv(tmp_path / "x.csv", SIX_ROWS)
    with monkeypatch.context() as m:
        m.setattr(writer, "check_decoder", lambda: None)  # preflight passes, decoding fails
        without_decoder(m)
        with pytest.raises(writer.ConversionEnvironmentError, match=r"ModuleNotFoundError.*pip install"):
            convert(tmp_path, videos["root"])
    assert not [p for p in os.listdir(tmp_path / "out") if p.startswith("train-")]
    rerun = convert(tmp_path, videos["root"])  # the environment fixed
    assert rerun.kept == [] and len(rerun.written) == 3 and rerun.num_examples == 6
    assert len(stored(str(tmp_path / "out" / "train@3"))) == 6 and not rerun.failures


def test_run_that_converted_nothing_marks_nothing_finished(tmp_path, videos, capsys):
    write_classes(tmp_path / "classes.txt", ["a", "b"])
    write_csv(tmp_path / "x.csv", SIX_ROWS)
    empty = tmp_path / "empty"  # a root that exists but holds none of the videos
    empty.mkdir()
    first = convert(tmp_path, str(empty))
    assert first.num_examples == 0 and len(first.failures) == 6
    # The same root, now with the videos: everything is converted again.
    for name in ("a.mp4", "b.avi"):
        (empty / name).write_bytes((tmp_path / "videos" / name).read_bytes())
    second = convert(tmp_path, str(empty))
    assert second.kept == [] and second.num_examples == 6 and not second.failures
    # Another root is another input: its shards are not the finished ones.
    third = convert(tmp_path, videos["root"])
    assert third.kept == [] and third.num_examples == 6
    assert len(convert(tmp_path, videos["root"]).kept) == 3


def test_state_of_an_older_writer_with_decoder_errors_is_not_finished(tmp_path, videos):
    write_classes(tmp_path / "classes.txt", ["a", "b"])
    write_csv(tmp_path / "x.csv", SIX_ROWS)
    first = convert(tmp_path, videos["root"])
    state_dir = tmp_path / "out" / ".train_state"
    for path in state_dir.glob("*.json"):  # as the writer before num_rows / video_root wrote it
        state = json.loads(path.read_text())
        fields = [["a.mp4", None, None, ["a"], 2]] * state["num_rows"]
        path.write_text(json.dumps({
            "fingerprint": state["fingerprint"], "num_examples": 0, "shard": state["shard"],
            "failures": [[f, "ModuleNotFoundError: No module named 'av'"] for f in fields]}))
    second = convert(tmp_path, videos["root"])
    assert second.kept == [] and second.written == first.shards and second.num_examples == 6


def test_cli_prints_the_first_failure_and_fails_when_nothing_or_too_much_failed(
        tmp_path, videos, capsys):
    tool = load_tool()
    classes = write_classes(tmp_path / "classes.txt", ["a", "b"])
    rows = [["a.mp4", "", "", "a"], ["nope.mp4", "", "", "b"], ["b.avi", "", "", "b"]]
    csv_path = write_csv(tmp_path / "x.csv", rows)
    base = [f"--csv={csv_path}", f"--class_list={classes}", "--num_workers=0",
            "--min_resize=24", "--no_progress"]
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "o1" / "train"
    assert tool.main(base + [f"--output={out}", f"--video_root={empty}"]) == 1
    captured = capsys.readouterr()
    assert "first failure: a.mp4 (CSV line 2): FileNotFoundError: video file" in captured.out
    assert "none of the 3 videos converted" in captured.err
    assert tool.main(base + [f"--output={out}", f"--video_root={videos['root']}"]) == 0
    assert "2 examples in 1 shards" in capsys.readouterr().out
    out = tmp_path / "o2" / "train"
    assert tool.main(base + [f"--output={out}", f"--video_root={videos['root']}",
                             "--max_failures=0.2"]) == 1
    captured = capsys.readouterr()
    assert "first failure: nope.mp4 (CSV line 3)" in captured.out
    assert "1 of 3 videos failed, more than --max_failures=0.2" in captured.err
    with pytest.raises(SystemExit):
        tool.parse_args(base + [f"--output={out}", "--max_failures=2"])
