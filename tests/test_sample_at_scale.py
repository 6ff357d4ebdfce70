"""The cascade at scale: three stages (the last trained on crops and sampling larger, as
sr1024), params FSDP-sharded over 8 devices, prompts split over 2 processes, and output
streamed to disk so that a killed job resumes to the same files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from test_cascade import make_workdir, tiny_stage_config
from test_train_loop import env, free_port

from imagen_jax.cli import main
from imagen_jax.parallel import make_mesh
from imagen_jax.pipeline import Cascade

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [f"a {c} {s}" for c in ("red", "blue", "green") for s in ("circle", "square", "triangle", "star")]


@pytest.fixture(scope="module")
def three_stages(tmp_path_factory):
    """base 16 px -> sr 16 -> 32 -> sr trained 16 -> 32 on crops, sampling 32 -> 64."""
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


def test_three_stage_cascade_from_the_cli(three_stages, tmp_path):
    out = tmp_path / "out"
    assert main(sample_args(three_stages, out, "--prompt", "a red circle", "--prompt", "a blue square")) == 0
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(e["index"], e["prompt"]) for e in lines] == [(0, "a red circle"), (1, "a blue square")]
    from PIL import Image

    sizes = {
        "": 64,
        "stages/0_base": 16,
        "stages/1_sr": 32,
    }
    for folder, size in sizes.items():
        for e in lines:
            assert Image.open(out / folder / e["image"]).size == (size, size)
    settings = json.loads((out / "settings.json").read_text())
    assert [(s["low_res_size"], s["image_size"]) for s in settings["stages"]] == [(0, 16), (16, 32), (32, 64)]


def test_a_cascade_out_of_order_names_the_fix(three_stages, tmp_path, capsys):
    base, sr, crops = three_stages
    assert main(sample_args([base, crops], tmp_path / "o", "--prompt", "x")) == 2
    err = capsys.readouterr().err
    assert "samples from 32 px inputs but stage 0 makes 16 px images" in err and "sampling.image_size" in err


def test_fsdp_sharded_sampling_on_8_devices_equals_one_device(three_stages):
    one = Cascade.from_workdirs(three_stages, mesh=make_mesh(1, 1, jax.devices()[:1]))
    eight = Cascade.from_workdirs(three_stages, mesh=make_mesh(2, 4))
    kernel = eight.params[1]["conv_in"]["kernel"]  # sharded over fsdp by the training's rules
    assert kernel.sharding.spec != jax.sharding.PartitionSpec() and len(kernel.addressable_shards) == 8
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


def test_killed_job_resumes_and_two_processes_write_the_same_files(three_stages, tmp_path):
    """One process on 2 devices, uninterrupted, is the reference. (a) The same job killed
    after its first batch, then rerun, skips what it wrote and ends with the same files.
    (b) Two processes of one device each (gloo) write the same files."""
    reference = tmp_path / "reference"
    finish(start(three_stages, reference))
    expected = pngs(reference)
    assert len(expected) == 3 * len(PROMPTS) + 3  # 3 stages' images and grids
    manifest = (reference / "manifest.jsonl").read_text()
    assert [json.loads(x)["index"] for x in manifest.splitlines()] == list(range(len(PROMPTS)))

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
    assert pngs(killed) == expected
    assert (killed / "manifest.jsonl").read_text() == manifest

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
    assert pngs(two) == expected
    assert (two / "manifest.jsonl").read_text() == manifest


def test_a_rerun_with_other_settings_is_refused(three_stages, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(sample_args(three_stages[:1], out, "--prompt", "a red circle")) == 0
    assert main(sample_args(three_stages[:1], out, "--prompt", "a red circle", "--seed", "3")) == 2
    err = capsys.readouterr().err
    assert "holds samples made with other settings (seed differ)" in err and "another --out" in err
    assert os.listdir(out)  # nothing deleted
