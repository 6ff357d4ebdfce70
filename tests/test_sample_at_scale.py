"""The cascade at scale: three stages (the last trained on crops and sampling larger, as
sr1024), params FSDP-sharded over 8 devices, prompts split over 2 processes, and output
streamed to disk so that a killed job resumes to the same files."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from test_cascade import make_workdir, tiny_stage_config
from test_train_loop import env as train_env
from test_train_loop import free_port

from imagen_jax.cli import main
from imagen_jax.parallel import make_mesh
from imagen_jax.pipeline import Cascade

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "triangle", "star")]


CACHE = {}  # a persistent compilation cache shared by this module's subprocesses


def env(devices, **extra):
    return train_env(
        devices,
        JAX_COMPILATION_CACHE_DIR=str(CACHE["dir"]),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        **extra,
    )


@pytest.fixture(scope="module")
def three_stages(tmp_path_factory):
    """base 16 px -> sr 16 -> 32 -> sr trained 16 -> 32 on crops, sampling 32 -> 64."""
    CACHE["dir"] = tmp_path_factory.mktemp("jax_cache")
    root = str(tmp_path_factory.mktemp("three"))
    crops = tiny_stage_config("sr")
    crops.sampling.image_size = 64
    workdirs = [
        make_workdir(root, "base")[0],
        make_workdir(root, "sr")[0],
        make_workdir(root, "sr", name="sr_crops", config=crops)[0],
    ]
    return workdirs


def sample_args(workdirs, out, *extra):
    args = ["sample", "--out", str(out), "--no-progress", "--batch-size", "2"]
    for w in workdirs:
        args += ["--workdir", w]
    for i in range(len(workdirs)):
        args += [f"--config.{i}.sampling.num_steps=2"]
    return args + list(extra)


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def test_a_cascade_out_of_order_names_the_fix(three_stages, tmp_path, capsys):
    base, sr, crops = three_stages
    assert main(sample_args([base, crops], tmp_path / "o", "--prompt", "x")) == 2
    err = capsys.readouterr().err
    assert "samples from 32 px inputs but stage 0 makes 16 px images" in err and "sampling.image_size" in err


def test_fsdp_sharded_sampling_on_8_devices_equals_one_device(three_stages):
    one = Cascade.from_workdirs(three_stages[:2], mesh=make_mesh(1, 1, jax.devices()[:1]))
    eight = Cascade.from_workdirs(three_stages[:2], mesh=make_mesh(2, 4))
    kernel = eight.params[1]["conv_in"]["kernel"]  # sharded over fsdp by the training's rules
    assert kernel.sharding.spec != jax.sharding.PartitionSpec() and len(kernel.addressable_shards) == 8
    t5 = eight.text_encoder.params["layers_0"]["mlp"]["wo"]["kernel"]  # T5 too, by the same rules
    assert t5.sharding.spec != jax.sharding.PartitionSpec() and t5.sharding.mesh == eight.mesh
    a = one.sample(PROMPTS[:8], seed=1, batch_size=8)
    b = eight.sample(PROMPTS[:8], seed=1, batch_size=8)
    for x, y in zip(a.images, b.images):
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 1  # float sums in another order
        assert np.mean(x == y) > 0.99


def sample_cmd(workdirs, out):
    return [sys.executable, "-m", "imagen_jax.cli", *sample_args(workdirs, out, "--prompts-file", str(out) + ".txt")]


def start(workdirs, out, **env_extra):
    Path(str(out) + ".txt").write_text("\n".join(PROMPTS) + "\n")
    return subprocess.Popen(
        sample_cmd(workdirs, out),
        env=env(env_extra.pop("devices", 2), **env_extra),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout=600):
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]


@pytest.fixture(scope="module")
def reference(three_stages, tmp_path_factory):
    """The three-stage job run by one process on 2 devices, uninterrupted: what every other
    way of running it must write."""
    out = tmp_path_factory.mktemp("reference") / "out"
    finish(start(three_stages, out))
    return out


def test_three_stage_cascade_from_the_cli(reference):
    lines = [json.loads(x) for x in (reference / "manifest.jsonl").read_text().splitlines()]
    assert [(e["index"], e["prompt"], e["seed"]) for e in lines] == [(i, p, 0) for i, p in enumerate(PROMPTS)]
    from PIL import Image

    for folder, size in {"": 64, "stages/0_base": 16, "stages/1_sr": 32}.items():
        assert all(Image.open(reference / folder / e["image"]).size == (size, size) for e in lines)
    assert len(pngs(reference)) == 3 * len(PROMPTS) + 3  # 3 stages' images and grids
    settings = json.loads((reference / "settings.json").read_text())
    assert [(s["low_res_size"], s["image_size"]) for s in settings["stages"]] == [(0, 16), (16, 32), (32, 64)]
    assert [s["checkpoint_step"] for s in settings["stages"]] == [7, 7, 7]  # a rerun after more training is refused


def test_killed_job_resumes_to_the_same_files(three_stages, reference, tmp_path):
    """The job killed after its first batch, then run again: it skips what it wrote and ends
    with the reference's files."""
    killed = tmp_path / "killed"
    proc = start(three_stages, killed)
    deadline = time.time() + 300
    while not list(killed.glob("0*.png")):
        assert proc.poll() is None and time.time() < deadline, "no image appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert len(list(killed.glob("*.png"))) < len(PROMPTS)  # it stopped part way
    finish(start(three_stages, killed))
    assert pngs(killed) == pngs(reference)
    assert (killed / "manifest.jsonl").read_text() == (reference / "manifest.jsonl").read_text()


def test_two_processes_write_the_same_files(three_stages, reference, tmp_path):
    """Two processes of one device each (gloo): the prompts split across them, each batch
    over both devices, and the same files as one process."""
    two = tmp_path / "two_processes"
    port = free_port()
    procs = [
        start(
            three_stages,
            two,
            devices=1,
            IMAGEN_JAX_COORDINATOR=f"127.0.0.1:{port}",
            IMAGEN_JAX_NUM_PROCESSES="2",
            IMAGEN_JAX_PROCESS_ID=str(i),
            JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        )
        for i in range(2)
    ]
    for p in procs:
        finish(p)
    assert pngs(two) == pngs(reference)
    assert (two / "manifest.jsonl").read_text() == (reference / "manifest.jsonl").read_text()


def test_a_rerun_skips_finished_batches_and_refuses_other_settings(three_stages, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    Path(str(out) + ".txt").write_text("\n".join(PROMPTS) + "\n")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p.name != "grid.png"}
    args = sample_args(three_stages, out, "--prompts-file", str(out) + ".txt")
    assert main(args) == 0  # every batch skipped: nothing sampled, no image rewritten
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert main(args + ["--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "holds samples made with other settings (seed differ)" in err and "another --out" in err
    assert pngs(out) == pngs(reference)  # nothing deleted or changed
