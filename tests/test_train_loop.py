"""The training loop end to end: exact resume after SIGKILL, SIGTERM, two processes, config
mismatch, divergence. Runs `imagen-jax train` in subprocesses on a tiny 16 px model."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from multihost import free_port, slurm_env

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
    """The input's global position saved with `step`: {"next_element": ..., "global_batch_size": ...}."""
    return json.loads((Path(workdir) / "checkpoints" / str(step) / "data_position" / "metadata").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    global CACHE_DIR
    CACHE_DIR = tmp_path_factory.mktemp("jax_cache")  # the runs share compiled programs
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    run_train(workdir, tiny_overrides(data_dir, steps=12), "--status-file", str(workdir / "status"))
    assert (workdir / "status").read_text() == "finished\n"
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
    # The killed run's lines after its checkpoint are dropped: one line per step, the same losses.
    resumed_lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["loss"]) for x in resumed_lines] == [(x["step"], x["loss"]) for x in lines]


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
    status = tmp_path / "status"
    proc = subprocess.Popen(
        train_cmd(workdir, tiny_overrides(data_dir, steps=1000), "--status-file", str(status)),
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
    assert status.read_text() == "preempted\n"  # what launch/tpu_train.sh --restart reads


def start_two_processes(workdir, overrides, *flags, stdout=subprocess.DEVNULL):
    """`imagen-jax train` as a 2-process job that JAX's own cluster detection joins (the
    variables srun gives each task), one CPU device per process, gloo collectives."""
    port = free_port()
    return [
        subprocess.Popen(
            train_cmd(workdir, overrides, *flags),
            env=env(1, **slurm_env(port, i), JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo"),
            cwd=REPO,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]


def run_two_processes(workdir, overrides, *flags):
    for p in start_two_processes(workdir, overrides, *flags):
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-4000:]


def test_sigterm_to_both_processes_saves_one_step_and_both_exit_cleanly(data_dir, tmp_path):
    """The multi-host preemption path: SIGTERM reaches the two processes 0.5 s apart; JAX's
    preemption sync point makes both stop after the same step, save it together, exit 0."""
    workdir = tmp_path / "preempted"
    procs = start_two_processes(workdir, tiny_overrides(data_dir, steps=1000))
    first = wait_for_checkpoint(procs[0], workdir)
    procs[0].send_signal(signal.SIGTERM)
    time.sleep(0.5)
    procs[1].send_signal(signal.SIGTERM)
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for e in errs]
    stopped = [re.findall(r"SIGTERM: saving step (\d+) and stopping", e) for e in errs]
    assert len(stopped[0]) == 1 and stopped[0] == stopped[1], [e[-3000:] for e in errs]
    step = int(stopped[0][0])
    assert first <= step < 1000 and committed_steps(workdir)[-1] == step
    assert saved_params(workdir, step)[1] == step
    assert saved_data_state(workdir, step)["next_element"] == 8 * step


def saved_until(source, destination, step):
    """A copy of run `source` as it was when checkpoint `step` was its latest."""
    shutil.copytree(source, destination)
    for later in committed_steps(destination):
        if later > step:
            shutil.rmtree(Path(destination) / "checkpoints" / str(later))


def test_two_processes_train_like_one_and_resume_on_either_count(data_dir, tmp_path):
    """2 processes (joined by JAX's SLURM detection) train like 1 process with 2 devices,
    and the input position is global: a run saved by 2 processes resumes on 1, one saved by
    1 resumes on 2, each to the straight run's params and data position, bit for bit."""
    overrides = tiny_overrides(data_dir, steps=6)
    one = tmp_path / "one_process"
    run_train(one, overrides, devices=2)  # 1 process, 2 devices, global batch 8
    two = tmp_path / "two_processes"  # with a sample grid: sampling runs on global params across processes
    run_two_processes(two, tiny_overrides(data_dir, steps=6, **{"train.sample_every": 6, "sampling.num_steps": 4}))
    assert (two / "samples" / "step_0000006.png").exists()
    two_then_one, one_then_two = tmp_path / "two_then_one", tmp_path / "one_then_two"
    saved_until(two, two_then_one, 3)
    run_train(two_then_one, overrides, "--override", devices=2)  # --override: no sample grid now
    saved_until(one, one_then_two, 3)
    run_two_processes(one_then_two, overrides)
    straight, _ = saved_params(one, 6)
    assert saved_data_state(one, 3) == {"next_element": 24, "global_batch_size": 8}
    for other in (two, two_then_one, one_then_two):
        params, step = saved_params(other, 6)
        assert step == 6
        for a, b in zip(straight, params):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert saved_data_state(other, 6) == saved_data_state(one, 6) == {"next_element": 48, "global_batch_size": 8}


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
    status = tmp_path / "status"
    proc = subprocess.run(
        train_cmd(tmp_path / "run", overrides, "--status-file", str(status)),
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "non-finite losses in a row" in proc.stderr and "peak_lr" in proc.stderr
    assert status.read_text().startswith("failed: TrainingDivergedError: 3 non-finite losses in a row")
    steps = committed_steps(tmp_path / "run")
    if steps:  # whatever was committed before divergence is a whole, finite checkpoint
        leaves, _ = saved_params(tmp_path / "run", steps[-1])
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


def test_the_input_resumes_at_the_saved_global_position(caplog):
    """The checkpoint's data position wins (the batch size may have changed since); a
    checkpoint of an earlier version (Grain's per-host state, no position) resumes at step x
    batch, with a warning saying so."""
    from imagen_jax.train.loop import resume_element

    assert resume_element(3, {"next_element": 20, "global_batch_size": 4}, 8) == 20
    assert resume_element(0, None, 8) == 0 and not caplog.records
    with caplog.at_level("WARNING", logger="imagen_jax.train"):
        assert resume_element(3, None, 8) == 24
    assert "has no data position" in caplog.text and "element 24" in caplog.text


def test_in_loop_eval_logs_fid_and_clip_score(data_dir, tmp_path):
    """eval.every: the EMA params sample the data's first captions; FID (against reference
    statistics computed once beside the dataset) and CLIP score are logged at the eval step
    as an eval/... line of metrics.jsonl and TensorBoard scalars. (One eval: each FID costs
    a 2048 x 2048 sqrtm, ~15 s here; which steps evaluate is test_eval_steps.)"""
    from tiny_clip import save_tiny_clip

    from imagen_jax.eval.inception import init_params
    from imagen_jax.eval.inception_weights import save_safetensors

    weights = save_safetensors(init_params(0), str(tmp_path / "inception.safetensors"))
    (tmp_path / "clip").mkdir()
    save_tiny_clip(tmp_path / "clip", hidden_act="quick_gelu", legacy_eos=False, preprocessor=None, seed=0)
    extra = {"eval.every": 2, "eval.num_images": 4, "eval.reference_images": 8, "eval.batch_size": 4}
    extra.update({"checkpoint.every": 2})
    extra.update({"eval.inception_weights": weights, "eval.clip": str(tmp_path / "clip"), "sampling.num_steps": 2})
    workdir = tmp_path / "run"
    run_train(workdir, tiny_overrides(data_dir, steps=2, **extra))
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [line for line in lines if "eval/fid" in line]
    assert [line["step"] for line in evals] == [2]
    for line in evals:
        assert set(line) == {"step", "eval/fid", "eval/clip_score"}
        assert line["eval/fid"] > 0 and 0 <= line["eval/clip_score"] <= 100
    assert [line["step"] for line in lines if "loss" in line] == [1, 2]
    stats = list((Path(data_dir)).glob("**/fid_statistics/train_16px_8_seed0_*.npz"))
    assert len(stats) == 1  # computed once, beside the dataset
    scalars = tensorboard_scalars(workdir / "tensorboard")
    assert [step for step, _ in scalars["eval/fid"]] == [2] and len(scalars["eval/clip_score"]) == 1
    assert scalars["eval/fid"][0][1] == pytest.approx(evals[0]["eval/fid"], rel=1e-6)
    assert "train/loss" in scalars


def test_eval_steps():
    """Every eval.every steps and at the last step; never when eval.every is 0."""
    from imagen_jax.train.in_loop_eval import TrainingEval

    evaluation = TrainingEval.__new__(TrainingEval)
    evaluation.every = 2
    assert [s for s in range(1, 6) if evaluation.due(s, 5)] == [2, 4, 5]
    evaluation.every = 0
    assert not any(evaluation.due(s, 5) for s in range(1, 6))


def tensorboard_scalars(folder) -> dict:
    """{tag: [(step, value), ...]} of the event files in `folder` (TFRecord framing: length
    u64, its crc u32, the Event proto, its crc u32)."""
    import struct

    from tensorboardX.proto import event_pb2

    scalars: dict = {}
    for path in sorted(Path(folder).glob("events.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars
