"""The training loop end to end: exact resume after SIGKILL, SIGTERM, two processes, config
mismatch, divergence. Runs `imagen-jax train` in subprocesses on a tiny 16 px model."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from imagen_jax.config import apply_overrides, load_config
from imagen_jax.train.warm_start import warm_start
from imagen_jax.train.workdir import ConfigMismatchError, check_workdir_config

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "shapes_base32.py")


def tiny_overrides(data_dir, steps=12, **extra):
    overrides = {
        "resolution": 16,
        "data.name": "imagen_shapes/16px_seed0_train64_test8",
        "data.data_dir": str(data_dir),
        "data.num_workers": 0,
        "model.channels": 8,
        "model.channel_mult": "(1, 2)",
        "model.head_dim": 8,
        "model.embed_dim": 32,
        "model.noise_sinusoid_dim": 16,
        "model.norm_groups": 4,
        "model.text_pool_heads": 2,
        "train.steps": steps,
        "train.batch_size": 8,
        "train.log_every": 1,
        "train.sample_every": 0,
        "checkpoint.every": 3,
        "optimizer.warmup_steps": 2,
    }
    overrides.update(extra)
    return [f"--config.{k}={v}" for k, v in overrides.items()]


CACHE_DIR = None  # a persistent compilation cache shared by this module's runs (set by a fixture)


def env(devices=1, **extra):
    out = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(REPO),
    )
    if CACHE_DIR:
        out.update(
            JAX_COMPILATION_CACHE_DIR=str(CACHE_DIR),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    out.update(extra)
    return out


def train_cmd(workdir, overrides, *flags):
    return [
        sys.executable,
        "-m",
        "imagen_jax.cli",
        "train",
        "--config",
        CONFIG,
        "--workdir",
        str(workdir),
        "--no-progress",
        *flags,
        *overrides,
    ]


def run_train(workdir, overrides, *flags, devices=1, timeout=600):
    proc = subprocess.run(
        train_cmd(workdir, overrides, *flags),
        env=env(devices),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def committed_steps(workdir):
    root = Path(workdir) / "checkpoints"
    if not root.exists():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "_CHECKPOINT_METADATA").exists())


def saved_params(workdir, step, item="params"):
    """(leaves of `item`, step) of a saved state, restored whole onto this process's first device."""
    path = Path(workdir) / "checkpoints" / str(step) / "state"
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), checkpointer.metadata(path).item_metadata
    )
    state = checkpointer.restore(path, target)
    return jax.tree_util.tree_leaves(state[item]), int(state["step"])


def saved_data_state(workdir, step):
    return json.loads((Path(workdir) / "checkpoints" / str(step) / "data" / "process_0-of-1.json").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    global CACHE_DIR
    CACHE_DIR = tmp_path_factory.mktemp("jax_cache")  # the runs share compiled programs
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    run_train(workdir, tiny_overrides(data_dir, steps=12))
    return workdir


def wait_for_checkpoint(proc, workdir, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if committed_steps(workdir):
            return committed_steps(workdir)[-1]
        if proc.poll() is not None:
            raise AssertionError(f"training exited early: {proc.stderr.read()[-4000:]}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


def test_exact_resume_after_sigkill(straight_run, data_dir, tmp_path):
    workdir = tmp_path / "killed"
    # The same 12 steps (the lr schedule's horizon is train.steps), slowed by a sample grid
    # after every step so that the kill lands between the first checkpoint and the end.
    overrides = tiny_overrides(data_dir, steps=12, **{"train.sample_every": 1})
    proc = subprocess.Popen(
        train_cmd(workdir, overrides), env=env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed_from = committed_steps(workdir)[-1]
    assert 3 <= resumed_from < 12
    run_train(workdir, overrides)  # the same command again resumes
    straight, step_a = saved_params(straight_run, 12)
    resumed, step_b = saved_params(workdir, 12)
    assert step_a == step_b == 12
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert saved_data_state(straight_run, 12) == saved_data_state(workdir, 12)  # same data order
    lines = [json.loads(x) for x in (Path(straight_run) / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, 13)) and all(np.isfinite(x["loss"]) for x in lines)


def test_tokens_mode_resumes_exactly_after_sigkill(data_dir, tmp_path):
    """data.text='tokens': the step encodes the captions' token ids with the frozen T5 (loaded
    at start-up, not checkpointed); a run killed after a checkpoint and started again ends
    with the params and data position of an uninterrupted run."""
    overrides = tiny_overrides(data_dir, steps=9, **{"data.text": "tokens"})
    straight = tmp_path / "straight"
    run_train(straight, overrides)
    killed = tmp_path / "killed"
    slowed = tiny_overrides(data_dir, steps=9, **{"data.text": "tokens", "train.sample_every": 1})
    proc = subprocess.Popen(
        train_cmd(killed, slowed), env=env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for_checkpoint(proc, killed)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert 3 <= committed_steps(killed)[-1] < 9
    run_train(killed, slowed)
    a, _ = saved_params(straight, 9)
    b, _ = saved_params(killed, 9)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert saved_data_state(straight, 9) == saved_data_state(killed, 9)
    state = ocp.StandardCheckpointer().metadata(Path(straight) / "checkpoints" / "9" / "state").item_metadata
    assert set(state) == {"step", "params", "opt_state", "ema_params", "nonfinite_streak", "nonfinite_total"}


def test_cache_mode_never_loads_the_encoder_it_does_not_use(straight_run, data_dir, tmp_path, monkeypatch):
    """With the embedding cache written (by straight_run) and no sample grids, training never
    loads the text encoder."""
    from imagen_jax.train import inputs, loop

    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder was loaded")

    monkeypatch.setattr(loop, "load_encoder", refuse)
    monkeypatch.setattr(inputs, "load_encoder", refuse)
    config = apply_overrides(load_config(CONFIG), tiny_overrides(data_dir, steps=1))
    metrics = loop.train(config, str(tmp_path / "run"), progress=False)
    assert np.isfinite(metrics["loss"])


def test_unreadable_latest_checkpoint_is_moved_aside_and_the_one_before_resumes(straight_run, data_dir, tmp_path):
    """A committed checkpoint with truncated array files (a partial copy, a disk error):
    --no-checkpoint-fallback stops naming it; by default it is moved aside (kept) and the run
    resumes from the checkpoint before, to the params of the uninterrupted run; sampling
    from it stops with the same reason."""
    import shutil

    from imagen_jax.pipeline.stage_params import load_ema_params
    from imagen_jax.train.checkpoints import CheckpointUnreadableError

    workdir = tmp_path / "copy"
    shutil.copytree(straight_run, workdir)
    assert committed_steps(workdir)[-3:] == [6, 9, 12]
    shutil.rmtree(workdir / "checkpoints" / "12")  # as if the run had stopped after saving step 9
    # Cut the array data files (OCDBT's d/ folder) of checkpoint 9 to half their size.
    arrays = [p for p in (workdir / "checkpoints" / "9" / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    for array in [p for p in arrays if p.stat().st_size > 4096]:
        os.truncate(array, array.stat().st_size // 2)

    overrides = tiny_overrides(data_dir, steps=12)
    config = json.loads((workdir / "config.json").read_text())
    with pytest.raises(CheckpointUnreadableError, match=r"step 9 .* does not restore .*earlier step \(it has \[6\]\)"):
        load_ema_params(str(workdir), config)
    stopped = subprocess.run(
        train_cmd(workdir, overrides, "--no-checkpoint-fallback"), env=env(), cwd=REPO, capture_output=True, text=True
    )
    assert stopped.returncode == 2 and "checkpoint step 9 at" in stopped.stderr, stopped.stderr[-3000:]
    assert committed_steps(workdir)[-1] == 9  # left where it was

    resumed = run_train(workdir, overrides)
    assert re.search(r"checkpoint step 9 does not restore \(.+\); moved it aside to .*unreadable-9-", resumed.stderr)
    assert len(list((workdir / "checkpoints").glob("unreadable-9-*/state"))) == 1  # kept, not deleted
    a, _ = saved_params(straight_run, 12)
    b, _ = saved_params(workdir, 12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_sigterm_saves_and_exits_cleanly(data_dir, tmp_path):
    workdir = tmp_path / "preempted"
    proc = subprocess.Popen(
        train_cmd(workdir, tiny_overrides(data_dir, steps=1000)),
        env=env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = wait_for_checkpoint(proc, workdir)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    last = committed_steps(workdir)[-1]
    assert first <= last < 1000
    _, step = saved_params(workdir, last)
    assert step == last  # the checkpoint holds the state at the step where it stopped
    logged = [json.loads(x)["step"] for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1] == last


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one(data_dir, tmp_path):
    one = tmp_path / "one_process"
    run_train(one, tiny_overrides(data_dir, steps=3), devices=2)  # 1 process, 2 devices, global batch 8
    two = tmp_path / "two_processes"
    port = free_port()
    procs = [
        subprocess.Popen(  # with a sample grid: sampling runs on global params across processes
            train_cmd(two, tiny_overrides(data_dir, steps=3, **{"train.sample_every": 3, "sampling.num_steps": 4})),
            env=env(
                1,
                IMAGEN_JAX_COORDINATOR=f"127.0.0.1:{port}",
                IMAGEN_JAX_NUM_PROCESSES="2",
                IMAGEN_JAX_PROCESS_ID=str(i),
                JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
            ),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-4000:]
    a, _ = saved_params(one, 3)
    b, _ = saved_params(two, 3)
    for x, y in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
    assert (two / "samples" / "step_0000003.png").exists()


def test_config_mismatch_is_refused(tmp_path):
    config = load_config(CONFIG)
    check_workdir_config(config, str(tmp_path), override=False)  # new run: writes config.json
    changed = apply_overrides(load_config(CONFIG), ["optimizer.peak_lr=0.5"])
    with pytest.raises(ConfigMismatchError, match=r"(?s)optimizer.peak_lr: 0.001 -> 0.5.*--override"):
        check_workdir_config(changed, str(tmp_path), override=False)
    check_workdir_config(changed, str(tmp_path), override=True)
    assert json.loads((tmp_path / "config.json").read_text())["optimizer"]["peak_lr"] == 0.5


def test_overrides_are_typed_and_none_turns_an_optional_float_off():
    config = apply_overrides(
        load_config(CONFIG), ["diffusion.min_snr_gamma=5.0", "optimizer.warmup_steps=7", "sampling.start_logsnr=-10"]
    )
    assert config.diffusion.min_snr_gamma == 5.0 and config.optimizer.warmup_steps == 7
    assert config.sampling.start_logsnr == -10
    config = apply_overrides(config, ["diffusion.min_snr_gamma=None"])
    assert config.diffusion.min_snr_gamma is None
    with pytest.raises(ValueError, match="optimizer.warmup_steps"):
        apply_overrides(config, ["optimizer.warmup_steps=None"])


def test_divergence_stops_with_a_clear_message_and_keeps_the_checkpoint(data_dir, tmp_path):
    overrides = tiny_overrides(
        data_dir, steps=40, **{"optimizer.peak_lr": 1e30, "optimizer.warmup_steps": 0, "train.max_nonfinite_streak": 3}
    )
    proc = subprocess.run(
        train_cmd(tmp_path, overrides), env=env(), capture_output=True, text=True, timeout=600, cwd=REPO
    )
    assert proc.returncode == 2
    assert "non-finite losses in a row" in proc.stderr and "peak_lr" in proc.stderr
    steps = committed_steps(tmp_path)
    if steps:  # whatever was committed before divergence is a whole, finite checkpoint
        leaves, _ = saved_params(tmp_path, steps[-1])
        assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)


def test_init_from_starts_another_resolution_from_a_trained_stage(straight_run, data_dir, tmp_path):
    """train.init_from: an 8 px run starts from the 16 px run's params and EMA params (attention
    stays on the second level). At lr 0 and EMA decay 1 its first checkpoint holds exactly the
    source's params and EMA params (the two differ after the source's 12 steps)."""
    overrides = tiny_overrides(
        data_dir,
        steps=3,
        **{
            "resolution": 8,
            "model.attention_resolutions": "(4,)",
            "optimizer.peak_lr": 0.0,
            "train.ema_decay": 1.0,
            "train.ema_warmup": False,
            "train.init_from": str(straight_run),
        },
    )
    run_train(tmp_path / "warm", overrides)
    for item in ("params", "ema_params"):
        source, _ = saved_params(straight_run, 12, item)
        warm, step = saved_params(tmp_path / "warm", 3, item)
        assert step == 3 and len(warm) == len(source)
        for x, y in zip(warm, source):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    source_params, _ = saved_params(straight_run, 12)
    source_ema, _ = saved_params(straight_run, 12, "ema_params")
    assert any(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(source_params, source_ema))

    # A model that does not match is refused before anything is restored, the param named.
    saved = ocp.PyTreeCheckpointer().metadata(Path(straight_run) / "checkpoints" / "12" / "state").item_metadata
    params = jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), saved["params"])
    path, leaf = jax.tree_util.tree_leaves_with_path(params)[0]
    wider = jax.tree_util.tree_map_with_path(
        lambda p, x: jax.ShapeDtypeStruct(x.shape[:-1] + (2 * x.shape[-1],), x.dtype) if p == path else x, params
    )
    with pytest.raises(
        ValueError,
        match=rf"(?s)param \['(ema_)?params'\]{re.escape(jax.tree_util.keystr(path))} is "
        rf"{re.escape(str(leaf.shape))} there.*same model section",
    ):
        warm_start(str(straight_run), SimpleNamespace(params=wider, ema_params=wider), shardings=None)


def test_init_from_a_workdir_without_checkpoints_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"has no checkpoint.*train.init_from=''"):
        warm_start(str(tmp_path), state=None, shardings=None)
