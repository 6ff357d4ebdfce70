"""`imagen-jax demo` end to end on its smoke config (tiny stages, a few steps): both stages
train, the cascade samples, and every evaluation part lands in eval.json and on stdout."""

import json
import os
import subprocess
import sys

from imagen_jax.cli import main
from imagen_jax.config import load_config
from imagen_jax.train.loop import train

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.py")


def test_demo_smoke_runs_end_to_end(tmp_path, monkeypatch):
    # As a user runs it: its own process on one CPU device (not the suite's 8 fake devices,
    # whose partitioned compiles take twice as long here).
    monkeypatch.setenv("IMAGEN_JAX_DATA_DIR", str(tmp_path / "data"))
    workdir = tmp_path / "demo"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
    command = [sys.executable, "-m", "imagen_jax.cli", "demo", "--config", f"{CONFIG}:smoke"]
    proc = subprocess.run(
        [*command, "--workdir", str(workdir), "--no-progress"], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((workdir / "eval.json").read_text())
    assert result["base_accuracy"]["num_images"] == 3 and 0.0 <= result["base_accuracy"]["correct"] <= 1.0
    assert result["two_object_accuracy"]["num_two_object"] == 1
    over = result["base_accuracy_over_seeds"]
    assert [row["seed"] for row in over["per_seed"]] == [0, 1]
    assert over["min"] <= over["mean"] <= over["max"]
    assert 0.0 <= over["mean_strict"] <= over["mean"]
    sweep = result["guidance_sweep"]
    assert [row["guidance_weight"] for row in sweep] == [1.0, 5.0]
    # Dynamic thresholding returns in-range pixels by construction; no thresholding need not.
    assert all(row["dynamic"]["out_of_range"] == 0.0 for row in sweep)
    fidelity = result["sr_fidelity"]
    assert fidelity["num_images"] == 3 and fidelity["low_res"] == [16, 16] and fidelity["high_res"] == [32, 32]
    assert set(result["seconds"]) == {"train_base", "train_sr", "sample", "eval"}
    manifest = json.loads((workdir / "samples" / "manifest.json").read_text())
    assert len(manifest) == 3 and all((workdir / "samples" / e["image"]).exists() for e in manifest)
    assert (workdir / "samples" / "cascade.png").exists()
    out = proc.stdout
    assert "guidance sweep" in out and "SR fidelity" in out and "bicubic" in out
    assert "strict (every stated attribute, background included)" in out

    # A rerun finds both stages finished: training returns the last logged metrics and no
    # step is trained again (the demo's rerun then samples and evaluates as above).
    config = load_config(f"{CONFIG}:smoke")
    for stage in ("base", "sr"):
        logged = (workdir / stage / "metrics.jsonl").read_text()
        last = json.loads(logged.splitlines()[-1])
        assert train(config[stage], str(workdir / stage), progress=False) == {k: last[k] for k in last if k != "step"}
        assert (workdir / stage / "metrics.jsonl").read_text() == logged


def test_demo_names_the_fix_for_a_missing_config(tmp_path, capsys):
    assert main(["demo", "--config", str(tmp_path / "nope.py"), "--workdir", str(tmp_path / "d")]) == 2
    assert "imagen-jax demo: error: no demo config" in capsys.readouterr().err


def test_demo_base_stage_alone_is_the_demos_base(tmp_path):
    """configs/demo.py:base is what `imagen-jax train` reads to train the demo's base stage alone."""
    import pytest

    assert load_config(f"{CONFIG}:base").to_dict() == load_config(CONFIG).base.to_dict()
    with pytest.raises(ValueError, match="configs/demo.py:base"):
        load_config(f"{CONFIG}:bsae")
