"""`imagen-jax data import` of img2dataset shards in this process (--runner inprocess, no
Beam): every drop counted by reason, pixels and captions kept exactly, a test split of
whole shards, gs:// in and out, a killed run resumed to the same dataset, and training on
the result. tests/test_data_web_import_beam.py runs the same inputs on Beam's DirectRunner."""

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from img2dataset_shards import FILTERS, write_shards
from PIL import Image

from imagen_jax import cli, storage
from imagen_jax.data.sources import open_source
from imagen_jax.data.web_import import import_shards

find_spec = importlib.util.find_spec

FILTER_FLAGS = [
    f"--min-image-side={FILTERS.min_image_side}",
    f"--max-aspect-ratio={FILTERS.max_aspect_ratio}",
    f"--min-caption-length={FILTERS.min_caption_length}",
    f"--max-caption-length={FILTERS.max_caption_length}",
]


def records_of(name, data_dir, split="train"):
    """(file, caption, pixels) of every record of a split, in order."""
    source = open_source(name, split=split, data_dir=data_dir)
    out = []
    for i in range(len(source)):
        pixels = np.asarray(Image.open(io.BytesIO(source[i]["image"])).convert("RGB"))
        out.append((source[i]["file"].decode(), source[i]["caption"].decode(), pixels))
    return out


def assert_same_records(actual, expected):
    assert [(f, c) for f, c, _ in actual] == [(f, c) for f, c, _ in expected]
    for (name, _, a), (_, _, b) in zip(actual, expected):
        np.testing.assert_array_equal(a, b, err_msg=name)


def dataset_files(data_dir, name):
    """{file name: bytes} of a prepared dataset's record files (the deterministic part)."""
    folder = os.path.join(data_dir, name, "1.0.0")
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder)) if ".array_record-" in f}


def test_shards_import_counts_every_drop_and_keeps_pixels(tmp_path, capsys):
    expected = write_shards(tmp_path / "in")
    data_dir = str(tmp_path / "tfds")
    argv = ["data", "import", str(tmp_path / "in" / "{00000..00002}.tar"), str(tmp_path / "in" / "*.parquet")]
    argv += ["--name", "web", "--data-dir", data_dir, "--runner", "inprocess", "--test-shards", "1", *FILTER_FLAGS]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "Imported 6 train, 1 test from 20 records in 4 shards" in out and "3 duplicate" in out
    assert "00002.tar (ReadError" in out  # the truncated tar, counted and kept up to the cut

    assert_same_records(records_of("web", data_dir), expected.kept[:6])
    assert_same_records(records_of("web", data_dir, "test"), expected.kept[6:])  # the last shard
    report = json.loads((tmp_path / "tfds" / "web" / "1.0.0" / "import_report.json").read_text())
    assert report["dropped"] == expected.dropped and report["records"] == expected.records
    assert [os.path.basename(s["shard"]) for s in report["unreadable_shards"]] == expected.unreadable_shards
    assert report["settings"]["filters"]["min_image_side"] == FILTERS.min_image_side
    assert not (tmp_path / "tfds" / "web" / "_import").exists()  # the work folder is gone

    assert cli.main(["data", "info", "web", "--data-dir", data_dir]) == 0
    info = capsys.readouterr().out
    assert "split train: 6 records" in info and "split test: 1 records" in info and "a red square" in info

    # Bad input: one message naming the fix, exit status 2, nothing written.
    assert cli.main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*argv[:2], str(tmp_path / "in" / "*.tgz"), *argv[4:]]) == 2
    assert "No .tar or .parquet shard matches" in capsys.readouterr().err
    folder_argv = ["data", "import", str(tmp_path / "in"), "--name", "f", "--data-dir", data_dir]
    assert cli.main([*folder_argv, "--min-image-side", "128"]) == 2
    assert "--min-image-side applies to shard imports" in capsys.readouterr().err
    assert cli.main([*argv, "--test-size", "2"]) == 2
    assert "--test-shards" in capsys.readouterr().err
    wrong_column = ["data", "import", str(tmp_path / "in" / "00003.parquet"), "--name", "p", "--data-dir", data_dir]
    assert cli.main([*wrong_column, "--image-column", "png", "--runner", "inprocess"]) == 2
    err = capsys.readouterr().err
    assert "no column 'png'" in err and "--image-column" in err


def test_shards_on_gcs_import_to_a_gcs_dataset(gcs, gcs_mount, tmp_path):
    expected = write_shards(tmp_path / "in", seed=1)
    for path in sorted((tmp_path / "in").iterdir()):
        storage.write_bytes(gcs.uri(f"web_in/{path.name}"), path.read_bytes())
    data_dir = gcs.uri("web_tfds")
    _, report = import_shards(
        [gcs.uri("web_in/*")], name="web_gcs", data_dir=data_dir, filters=FILTERS, runner="inprocess"
    )
    assert report.dropped == expected.dropped and report.written == {"train": 7}
    assert_same_records(records_of("web_gcs", data_dir), expected.kept)
    assert not [name for name in gcs.objects("web_tfds/web_gcs/") if "/_import/" in name]


def kill_and_resume(tmp_path, runner_flags):
    """Imports the test shards twice: straight through in this process, and with
    `runner_flags` in a subprocess that is killed half way, then rerun. Shard 00001.tar is
    a FIFO that nobody writes at first: the killed run converts other shards and blocks
    there; the real file is put in place before the rerun. Returns (straight, resumed)
    data dirs and the rerun's stdout."""
    write_shards(tmp_path / "in")
    straight = str(tmp_path / "straight")
    import_shards([str(tmp_path / "in" / "*")], name="web", data_dir=straight, filters=FILTERS, runner="inprocess")

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for path in (tmp_path / "in").iterdir():
        if path.name != "00001.tar":
            (blocked / path.name).write_bytes(path.read_bytes())
    os.mkfifo(blocked / "00001.tar")
    resumed = str(tmp_path / "resumed")
    command = [sys.executable, "-m", "imagen_jax.cli", "data", "import", str(blocked / "*"), "--name", "web"]
    command += ["--data-dir", resumed, *runner_flags, *FILTER_FLAGS]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    converted = tmp_path / "resumed" / "web" / "_import" / "converted"
    deadline = time.time() + 180
    while not (converted.exists() and any(p.suffix == ".json" for p in converted.iterdir())):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-3000:]
        time.sleep(0.1)
    time.sleep(1.0)  # the other shards finish (or not): either way the rerun must complete them
    os.killpg(proc.pid, signal.SIGKILL)  # the import and any worker processes it started
    proc.wait()
    assert not (tmp_path / "resumed" / "web" / "1.0.0" / "dataset_info.json").exists()
    done = sorted(p.stem for p in converted.iterdir() if p.suffix == ".json")
    assert "00001" not in done

    os.remove(blocked / "00001.tar")
    (blocked / "00001.tar").write_bytes((tmp_path / "in" / "00001.tar").read_bytes())
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Resuming the import of 'web': {len(done)} of 4 shards were converted before." in rerun.stdout
    return straight, resumed


def test_a_killed_import_resumes_to_the_same_dataset(tmp_path):
    straight, resumed = kill_and_resume(tmp_path, ["--runner", "inprocess", "--num-workers", "1"])
    assert dataset_files(resumed, "web") == dataset_files(straight, "web")  # byte for byte
    assert_same_records(records_of("web", resumed), records_of("web", straight))


def test_training_reads_an_imported_web_dataset(tmp_path):
    from test_train_loop import run_train, tiny_overrides

    write_shards(tmp_path / "in")
    data_dir = tmp_path / "tfds"
    import_shards([str(tmp_path / "in" / "*")], name="web", data_dir=data_dir, filters=FILTERS, runner="inprocess")
    overrides = tiny_overrides(data_dir, steps=2, **{"data.name": "web", "checkpoint.every": 2})
    run_train(tmp_path / "run", overrides)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert len(losses) == 2 and all(np.isfinite(losses))


def test_without_beam_shards_import_in_process_and_beam_runners_name_the_extra(tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setitem(sys.modules, "apache_beam", None)  # as if Beam were not installed
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "apache_beam" else find_spec(name, *a)
    )
    write_shards(tmp_path / "in")
    argv = ["data", "import", str(tmp_path / "in" / "*.tar"), "--name", "w", "--data-dir", str(tmp_path / "tfds")]
    assert cli.main([*argv, "--runner", "DirectRunner"]) == 2
    assert "pip install -e '.[beam]'" in capsys.readouterr().err
    assert cli.main([*argv, "--num-workers", "1", *FILTER_FLAGS]) == 0  # the default runner: in process
    assert "Imported 6 train" in capsys.readouterr().out and "Apache Beam is not installed" in caplog.text
