"""`imagen-jax data import` of img2dataset shards on Apache Beam's DirectRunner (2 worker
processes): the same records, drop counts and bytes as the in-process import, and a run
killed half way then restarted gives the same dataset as an uninterrupted one.

Beam is an optional extra (`pip install -e '.[beam]'`) whose pins conflict with the test
extra's, so CI installs it in a second step and runs this file alone with
IMAGEN_JAX_REQUIRE_BEAM=1 (then a missing Beam fails instead of skipping)."""

import json
import os

import pytest

if os.environ.get("IMAGEN_JAX_REQUIRE_BEAM") != "1":
    pytest.importorskip("apache_beam", reason="Apache Beam is the optional extra: pip install -e '.[beam]'")

from img2dataset_shards import FILTERS, write_shards  # noqa: E402
from test_data_web_import import (  # noqa: E402
    FILTER_FLAGS,
    assert_same_records,
    dataset_files,
    kill_and_resume,
    records_of,
)

from imagen_jax import cli  # noqa: E402
from imagen_jax.data.web_import import import_shards  # noqa: E402

DIRECT = ["--runner", "DirectRunner", "--num-workers", "2"]


def test_direct_runner_imports_what_the_in_process_path_imports(tmp_path, capsys):
    expected = write_shards(tmp_path / "in")
    data_dir = str(tmp_path / "beam")
    argv = ["data", "import", str(tmp_path / "in" / "*"), "--name", "web", "--data-dir", data_dir]
    assert cli.main([*argv, *DIRECT, "--test-shards", "1", *FILTER_FLAGS]) == 0
    assert "Imported 6 train, 1 test from 20 records in 4 shards" in capsys.readouterr().out

    assert_same_records(records_of("web", data_dir), expected.kept[:6])
    assert_same_records(records_of("web", data_dir, "test"), expected.kept[6:])
    report = json.loads((tmp_path / "beam" / "web" / "1.0.0" / "import_report.json").read_text())
    assert report["dropped"] == expected.dropped and report["records"] == expected.records
    assert [os.path.basename(s["shard"]) for s in report["unreadable_shards"]] == expected.unreadable_shards

    local = str(tmp_path / "inprocess")
    import_shards(
        [str(tmp_path / "in" / "*")], name="web", data_dir=local, filters=FILTERS, test_shards=1, runner="inprocess"
    )
    assert dataset_files(data_dir, "web") == dataset_files(local, "web")  # byte for byte


def test_a_killed_direct_runner_import_resumes_to_the_same_dataset(tmp_path):
    straight, resumed = kill_and_resume(tmp_path, DIRECT)
    assert dataset_files(resumed, "web") == dataset_files(straight, "web")
    assert_same_records(records_of("web", resumed), records_of("web", straight))
