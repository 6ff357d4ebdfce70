"""launch/: the exact commands each script prints with --dry-run (quoting included), its
errors for bad or missing options, the commands it really runs (fake gcloud / srun on
PATH), the remote shell fragments run for real in a scratch home directory, and shellcheck."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = sorted(p.name for p in LAUNCH.iterdir() if p.suffix in (".sh", ".sbatch") and p.name != "common.sh")
SCOPE = ["--project", "my-project", "--zone", "us-central2-b"]
TARGET = ["--name", "pod", *SCOPE]


@pytest.fixture(autouse=True)
def no_real_cloud(tmp_path, monkeypatch):
    """gcloud, srun, scontrol and sbatch that refuse to run, first on PATH: no test reaches a
    real cloud or cluster, even where those tools are installed (fakes go before them)."""
    guard = tmp_path / "guard_bin"
    guard.mkdir()
    for tool in ("gcloud", "srun", "scontrol", "sbatch"):
        executable(guard / tool, f"#!/bin/sh\necho 'test tried to run the real {tool}' >&2\nexit 99\n")
    monkeypatch.setenv("PATH", f"{guard}{os.pathsep}{os.environ['PATH']}")


def launch(
    script: str, *args: str, env: dict | None = None, cwd: Path | None = None, path_prefix: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a launch script with bash, with no IMAGEN_JAX_* / SLURM_* variables inherited,
    and the fake tools in path_prefix first on PATH."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEN_JAX_", "SLURM_"))}
    if path_prefix is not None:
        clean["PATH"] = f"{path_prefix}{os.pathsep}{clean['PATH']}"
    clean.update(env or {})
    return subprocess.run(
        ["bash", str(LAUNCH / script), *args], capture_output=True, text=True, env=clean, cwd=cwd, timeout=30
    )


def dry_run(script: str, *args: str, **kwargs) -> list[list[str]]:
    """The commands a script prints with --dry-run, each split back into its words."""
    result = launch(script, "--dry-run", *args, **kwargs)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(lines), result.stdout
    return [shlex.split(line) for line in lines]


def dry_run_text(script: str, *args: str, **kwargs) -> str:
    result = launch(script, "--dry-run", *args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(script: str, *args: str, **kwargs) -> str:
    """The one error line of a script that must refuse its options (exit status 2)."""
    result = launch(script, *args, **kwargs)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script}: error: "), result.stderr
    return lines[0]


def ssh(worker: str, command: str) -> list[str]:
    return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod", f"--worker={worker}", *SCOPE, "--command", command]


def executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ---------------------------------------------------------------- quoting and common options


def test_quoting_is_shlex_quote():
    """Printed commands use Python's shlex.quote rule, so shlex.join gives the exact line."""
    words = ["", "a b", "it's", "$HOME", "`id`", "x;y", "é", "*", "--labels=a=b,c=d", "~/x", "a\nb"]
    out = dry_run_text("tpu_create.sh", *TARGET, "--accelerator", "v4-8", "--", *words)
    expected = [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "create",
        "pod",
        "--node-id",
        "pod",
        *SCOPE,
        "--accelerator-type",
        "v4-8",
        "--runtime-version",
        "tpu-ubuntu2204-base",
        *words,
    ]
    assert out == shlex.join(expected) + "\n"


def test_options_in_equals_form_and_from_environment():
    env = {"IMAGEN_JAX_TPU_NAME": "pod", "IMAGEN_JAX_PROJECT": "my-project", "IMAGEN_JAX_ZONE": "us-central2-b"}
    assert dry_run("tpu_delete.sh", env=env) == dry_run(
        "tpu_delete.sh", "--name=pod", "--project=my-project", "--zone=us-central2-b"
    )
    assert dry_run("tpu_delete.sh", "--name", "other", env=env)[0][5] == "other"


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s.startswith("tpu_")])
@pytest.mark.parametrize("missing", ["--name", "--project", "--zone"])
def test_missing_target_is_named(script, missing):
    given = {"--name": "pod", "--project": "my-project", "--zone": "us-central2-b"}
    del given[missing]
    args = [w for kv in given.items() for w in kv]
    env_var = {"--name": "IMAGEN_JAX_TPU_NAME", "--project": "IMAGEN_JAX_PROJECT", "--zone": "IMAGEN_JAX_ZONE"}[missing]
    assert fails(script, *args, "--dry-run").endswith(f"error: {missing} is required (or set {env_var})")


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_unknown_option(script):
    assert os.access(LAUNCH / script, os.X_OK)
    result = launch(script, "--help")
    assert result.returncode == 0 and result.stdout.startswith("Usage:") and "--dry-run" in result.stdout
    assert fails(script, "--bogus").endswith("error: unknown option '--bogus' (see --help)")


def test_option_without_value():
    assert fails("tpu_create.sh", *TARGET, "--accelerator").endswith("error: --accelerator needs a value (see --help)")


# ---------------------------------------------------------------- tpu_create.sh


@pytest.mark.parametrize(
    "accelerator, accelerator_type, runtime",
    [
        ("v4-256", "v4-256", "tpu-ubuntu2204-base"),
        ("v5e-64", "v5litepod-64", "v2-alpha-tpuv5-lite"),
        ("v5litepod-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
        ("v5p-128", "v5p-128", "v2-alpha-tpuv5"),
        ("v6e-256", "v6e-256", "v2-alpha-tpuv6e"),
    ],
)
def test_create_default_runtime_per_generation(accelerator, accelerator_type, runtime):
    assert dry_run_text("tpu_create.sh", *TARGET, "--accelerator", accelerator) == (
        "gcloud compute tpus queued-resources create pod --node-id pod --project my-project --zone us-central2-b "
        f"--accelerator-type {accelerator_type} --runtime-version {runtime}\n"
    )


def test_create_spot_runtime_and_gcloud_flags():
    assert dry_run(
        "tpu_create.sh",
        *TARGET,
        "--accelerator=v6e-64",
        "--runtime",
        "v2-alpha-tpuv6e-custom",
        "--spot",
        "--",
        "--valid-until-duration=6h",
        "--network=my net",
    ) == [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "create",
            "pod",
            "--node-id",
            "pod",
            *SCOPE,
            "--accelerator-type",
            "v6e-64",
            "--runtime-version",
            "v2-alpha-tpuv6e-custom",
            "--spot",
            "--valid-until-duration=6h",
            "--network=my net",
        ]
    ]
    assert dry_run("tpu_create.sh", *TARGET, "--accelerator", "v4-8", "--reserved")[0][-1] == "--reserved"


def test_create_errors():
    assert fails("tpu_create.sh", *TARGET).endswith("error: --accelerator is required")
    assert "give --runtime VERSION" in fails("tpu_create.sh", *TARGET, "--accelerator", "tpu7x-64")
    assert fails("tpu_create.sh", *TARGET, "--accelerator", "v4-8", "--spot", "--reserved").endswith(
        "error: --spot and --reserved exclude each other: give one"
    )


# ---------------------------------------------------------------- tpu_setup.sh


def test_setup_from_pip_source():
    assert dry_run("tpu_setup.sh", *TARGET, "--source", "git+https://github.com/org/imagen_jax@v0.1.0") == [
        ssh(
            "all",
            "python3 -m pip install --upgrade git+https://github.com/org/imagen_jax@v0.1.0 'jax[tpu]' "
            "&& python3 -m imagen_jax.cli --version",
        )
    ]


def test_setup_from_wheel_with_spaces_and_pinned_jax(tmp_path):
    wheel = tmp_path / "my dist" / "imagen_jax-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"")
    commands = dry_run("tpu_setup.sh", *TARGET, "--wheel", str(wheel), "--jax", "0.10.2", "--python", "venv/bin/python")
    assert commands == [
        ["gcloud", "compute", "tpus", "tpu-vm", "scp", str(wheel), "pod:", "--worker=all", *SCOPE],
        ssh(
            "all",
            "venv/bin/python -m pip install --upgrade ./imagen_jax-0.1.0-py3-none-any.whl 'jax[tpu]==0.10.2' "
            "&& venv/bin/python -m imagen_jax.cli --version",
        ),
    ]


def test_setup_mounts_buckets_with_gcsfuse_on_every_worker():
    commands = dry_run("tpu_setup.sh", *TARGET, "--source", "imagen-jax", "--gcsfuse", "my-data", "--gcsfuse=runs")
    assert len(commands) == 2 and commands[1][:8] == ssh("all", "")[:8]
    mount = _remote(commands[1])
    assert "sudo apt-get install -y -qq fuse gcsfuse" in mount
    for bucket in ("my-data", "runs"):
        assert f"{{ mountpoint -q /gcs/{bucket} || gcsfuse --implicit-dirs {bucket} /gcs/{bucket}; }}" in mount
    assert "--gcsfuse expects a bucket name" in fails("tpu_setup.sh", *TARGET, "--source", "x", "--gcsfuse", "gs://b")


def test_setup_errors(tmp_path):
    assert fails("tpu_setup.sh", *TARGET).endswith("error: give exactly one of --source PIP_SPEC and --wheel FILE")
    assert "exactly one" in fails("tpu_setup.sh", *TARGET, "--source", "imagen-jax", "--wheel", "x.whl")
    assert "is not a file: build one with 'python -m build'" in fails(
        "tpu_setup.sh", *TARGET, "--wheel", str(tmp_path / "missing.whl")
    )
    (tmp_path / "notes.txt").write_text("")
    assert "neither a .whl nor a .tar.gz" in fails("tpu_setup.sh", *TARGET, "--wheel", str(tmp_path / "notes.txt"))


# ---------------------------------------------------------------- tpu_train.sh

START_CHECK = (
    'mkdir -p imagen_jax_logs; for f in imagen_jax_logs/*.pid; do if [ -e "$f" ] && '
    'kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(hostname): run $(basename "$f" .pid) '
    'is still running; stop it with tpu_stop.sh" >&2; exit 1; fi; done'
)


def start_command(run: str, train: list[str]) -> str:
    log, pid, status = (f"imagen_jax_logs/{run}.{kind}" for kind in ("log", "pid", "status"))
    return (
        f'{START_CHECK}; rm -f {status}; echo "=== $(date -u +%FT%TZ) $(hostname): start {run}" >> {log}; '
        f"setsid nohup {shlex.join(train)} >> {log} 2>&1 < /dev/null & echo $! > {pid}; "
        f'echo "$(hostname): started {run}, pid $(cat {pid}), log ~/{log}"'
    )


@pytest.fixture
def config_dir(tmp_path) -> Path:
    directory = tmp_path / "my configs"
    directory.mkdir()
    (directory / "base64_2b.py").write_text("def get_config(): ...\n")
    (directory / "common.py").write_text("")
    (directory / "README.md").write_text("not copied")
    return directory


def test_train_copies_configs_and_starts_on_all_workers(config_dir):
    config = config_dir / "base64_2b.py"
    commands = dry_run(
        "tpu_train.sh",
        *TARGET,
        "--config",
        str(config),
        "--workdir",
        "gs://bucket/runs/base64/",
        "--env",
        "LIBTPU_INIT_ARGS=--xla_a=true --xla_b=1",
        "--config.text.prompt=a cat's hat",
        "--config.train.steps",
        "10",
        "--override",
        "--",
        "--config.seed=3",
    )
    remote_dir = "imagen_jax_runs/base64/configs"
    assert commands == [
        ssh("all", f"mkdir -p {remote_dir}"),
        [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "scp",
            str(config),
            str(config_dir / "common.py"),
            f"pod:{remote_dir}/",
            "--worker=all",
            *SCOPE,
        ],
        ssh(
            "all",
            start_command(
                "base64",
                [
                    "env",
                    "IMAGEN_JAX_GCS_MOUNT=/gcs",
                    "LIBTPU_INIT_ARGS=--xla_a=true --xla_b=1",
                    "python3",
                    "-m",
                    "imagen_jax.cli",
                    "train",
                    "--config",
                    f"{remote_dir}/base64_2b.py",
                    "--workdir",
                    "gs://bucket/runs/base64/",
                    "--no-progress",
                    "--status-file",
                    "imagen_jax_logs/base64.status",
                    "--config.text.prompt=a cat's hat",
                    "--config.train.steps",
                    "10",
                    "--override",
                    "--config.seed=3",
                ],
            ),
        ),
    ]


def test_train_config_parameter_is_kept(config_dir):
    commands = dry_run("tpu_train.sh", *TARGET, "--config", f"{config_dir}/base64_2b.py:small", "--workdir", "gs://b/s")
    assert commands[1][5:7] == [str(config_dir / "base64_2b.py"), str(config_dir / "common.py")]
    assert (
        "--config imagen_jax_runs/s/configs/base64_2b.py:small --workdir gs://b/s --no-progress --status-file "
        in _remote(commands[2])
    )


def test_train_config_already_on_workers():
    assert dry_run(
        "tpu_train.sh",
        *TARGET,
        "--config",
        "imagen_jax/configs/sr256.py",
        "--workdir",
        "gs://b/sr",
        "--run",
        "sr256-try2",
        "--no-copy-config",
    ) == [
        ssh(
            "all",
            start_command(
                "sr256-try2",
                [
                    "env",
                    "IMAGEN_JAX_GCS_MOUNT=/gcs",
                    "python3",
                    "-m",
                    "imagen_jax.cli",
                    "train",
                    "--config",
                    "imagen_jax/configs/sr256.py",
                    "--workdir",
                    "gs://b/sr",
                    "--no-progress",
                    "--status-file",
                    "imagen_jax_logs/sr256-try2.status",
                ],
            ),
        )
    ]


def test_train_errors_and_warning(config_dir):
    config = str(config_dir / "base64_2b.py")
    assert fails("tpu_train.sh", *TARGET, "--workdir", "gs://b/x").endswith("error: --config is required")
    assert fails("tpu_train.sh", *TARGET, "--config", config).endswith("error: --workdir is required")
    assert "is not a .py file here: give a local config file, or --no-copy-config" in fails(
        "tpu_train.sh", *TARGET, "--config", "nope.py", "--workdir", "gs://b/x"
    )
    (config_dir / "notes.txt").write_text("")
    assert "is not a .py file here" in fails(
        "tpu_train.sh", *TARGET, "--config", str(config_dir / "notes.txt"), "--workdir", "gs://b/x"
    )
    assert "give --run NAME" in fails(
        "tpu_train.sh", *TARGET, "--config", config, "--workdir", "gs://b/x", "--run", "a b"
    )
    assert "give --run NAME" in fails("tpu_train.sh", *TARGET, "--config", config, "--workdir", "gs://")
    assert "--env expects KEY=VALUE" in fails("tpu_train.sh", *TARGET, "--env", "1X=2")
    result = launch("tpu_train.sh", *TARGET, "--config", config, "--workdir", "/tmp/run", "--dry-run")
    assert result.returncode == 0 and "is not a gs:// path" in result.stderr


# ---------------------------------------------------------------- status, logs, stop, delete

STATUS_REMOTE = (
    'for f in {pids}; do [ -e "$f" ] || continue; run=$(basename "$f" .pid); '
    'if kill -0 "$(cat "$f")" 2>/dev/null; then state=running; else state=stopped; fi; '
    'echo "$(hostname) $run $state: $(tail -n 1 "imagen_jax_logs/$run.log" 2>/dev/null)"; done'
)
STOP_REMOTE = (
    'for f in {pids}; do [ -e "$f" ] || continue; pid=$(cat "$f"); if kill -0 "$pid" 2>/dev/null; '
    'then kill -{sig} -- "-$pid" && echo "$(hostname): sent {sig} to run $(basename "$f" .pid) '
    '(process group $pid)"; fi; done'
)
DESCRIBE = ["gcloud", "compute", "tpus", "queued-resources", "describe", "pod", *SCOPE]


def test_status():
    assert dry_run("tpu_status.sh", *TARGET) == [
        DESCRIBE,
        ssh("all", STATUS_REMOTE.format(pids="imagen_jax_logs/*.pid")),
    ]
    assert dry_run("tpu_status.sh", *TARGET, "--run", "r1") == [
        DESCRIBE,
        ssh("all", STATUS_REMOTE.format(pids="imagen_jax_logs/r1.pid")),
    ]
    assert dry_run("tpu_status.sh", *TARGET, "--queue-only") == [DESCRIBE]


def test_logs():
    assert dry_run("tpu_logs.sh", *TARGET) == [ssh("0", 'tail -n 100 "$(ls -t imagen_jax_logs/*.log | head -n 1)"')]
    assert dry_run("tpu_logs.sh", *TARGET, "--run", "r1", "--worker", "all", "--lines", "5", "--follow") == [
        ssh("all", "tail -n 5 -F imagen_jax_logs/r1.log")
    ]
    assert "--worker expects a worker number or 'all'" in fails("tpu_logs.sh", *TARGET, "--worker", "w1")
    assert "--lines expects a number" in fails("tpu_logs.sh", *TARGET, "--lines", "5;rm")


def test_stop():
    assert dry_run("tpu_stop.sh", *TARGET) == [ssh("all", STOP_REMOTE.format(pids="imagen_jax_logs/*.pid", sig="TERM"))]
    assert dry_run("tpu_stop.sh", *TARGET, "--run", "r1", "--signal", "KILL") == [
        ssh("all", STOP_REMOTE.format(pids="imagen_jax_logs/r1.pid", sig="KILL"))
    ]
    assert "--signal expects TERM, INT or KILL" in fails("tpu_stop.sh", *TARGET, "--signal", "HUP")


def test_delete():
    delete = ["gcloud", "compute", "tpus", "queued-resources", "delete", "pod", *SCOPE, "--force"]
    assert dry_run("tpu_delete.sh", *TARGET) == [delete]
    assert dry_run("tpu_delete.sh", *TARGET, "--yes", "--async") == [delete + ["--async", "--quiet"]]


# ---------------------------------------------------------------- really running


@pytest.fixture
def fake_gcloud(tmp_path) -> tuple[Path, Path]:
    """A gcloud on PATH that appends its argv (JSON) to a file; returns (bin dir, log)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "gcloud_calls.jsonl"
    bin_dir.mkdir()
    executable(
        bin_dir / "gcloud",
        f"#!{sys.executable}\nimport json, sys\nopen({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n",
    )
    return bin_dir, log


def test_without_dry_run_the_printed_command_runs(fake_gcloud, tmp_path):
    bin_dir, log = fake_gcloud
    wheel = tmp_path / "a dir" / "imagen_jax-0.1.0.tar.gz"
    wheel.parent.mkdir()
    wheel.write_bytes(b"")
    args = (*TARGET, "--wheel", str(wheel))
    printed = dry_run("tpu_setup.sh", *args)
    result = launch("tpu_setup.sh", *args, path_prefix=bin_dir)
    assert result.returncode == 0, result.stderr
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [["gcloud", *call] for call in calls] == printed
    assert result.stderr.splitlines() == ["+ " + shlex.join(command) for command in printed]


def test_a_failing_command_fails_the_script():
    """Without --dry-run the guard gcloud runs (not the real one) and its status comes back."""
    result = launch("tpu_delete.sh", *TARGET)
    assert result.returncode == 99 and "test tried to run the real gcloud" in result.stderr


def _remote(command: list[str]) -> str:
    return command[command.index("--command") + 1]


def _run_remote(command: list[str], home: Path) -> subprocess.CompletedProcess:
    """Run a printed ssh command's remote part as a worker would: its login shell, in home."""
    return subprocess.run(
        ["bash", "-c", _remote(command)],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "HOME": str(home)},
    )


def _wait(predicate, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def reaper():
    """Make this process the subreaper of the detached run, as init is on a worker: it then
    reaps the run when it ends (a zombie would still answer kill -0)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) unavailable")

    def reap(pid: int) -> None:
        assert _wait(lambda: os.waitpid(pid, os.WNOHANG)[0] == pid), f"process {pid} did not end"

    yield reap
    libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


PR_SET_CHILD_SUBREAPER = 36


def test_remote_fragments_start_report_refuse_and_stop_a_run(tmp_path, reaper):
    """The worker-side scripts of train, status, logs and stop, run by bash in a scratch home."""
    home = tmp_path / "home"
    home.mkdir()
    fake_python = executable(
        tmp_path / "fake python", "#!/bin/sh\nprintf '%s\\n' \"$@\" > argv.txt\necho 'step 1 loss 0.5'\nexec sleep 60\n"
    )
    train = dry_run(
        "tpu_train.sh",
        *TARGET,
        "--config",
        "configs/x.py",
        "--workdir",
        "gs://b/run one",
        "--run",
        "r1",
        "--no-copy-config",
        "--python",
        str(fake_python),
        '--config.prompt=it\'s a "cat"',
    )[0]
    started = _run_remote(train, home)
    pid = int((home / "imagen_jax_logs" / "r1.pid").read_text())
    try:
        assert started.returncode == 0, started.stderr
        assert f"started r1, pid {pid}, log ~/imagen_jax_logs/r1.log" in started.stdout
        assert _wait(lambda: (home / "argv.txt").exists() and "step 1" in (home / "imagen_jax_logs/r1.log").read_text())
        assert (home / "argv.txt").read_text().splitlines() == [
            "-m",
            "imagen_jax.cli",
            "train",
            "--config",
            "configs/x.py",
            "--workdir",
            "gs://b/run one",
            "--no-progress",
            "--status-file",
            "imagen_jax_logs/r1.status",
            '--config.prompt=it\'s a "cat"',
        ]
        assert os.getpgid(pid) == pid  # its own process group, so stop reaches its children

        again = _run_remote(
            dry_run("tpu_train.sh", *TARGET, "--config", "c.py", "--workdir", "gs://b/r2", "--no-copy-config")[0], home
        )
        assert again.returncode == 1 and "run r1 is still running; stop it with tpu_stop.sh" in again.stderr

        status = _run_remote(dry_run("tpu_status.sh", *TARGET)[1], home)
        assert status.stdout.split(" ", 1)[1] == "r1 running: step 1 loss 0.5\n"
        logs = _run_remote(dry_run("tpu_logs.sh", *TARGET, "--lines", "1")[0], home)
        assert logs.stdout == "step 1 loss 0.5\n"

        stopped = _run_remote(dry_run("tpu_stop.sh", *TARGET, "--run", "r1")[0], home)
        assert f"sent TERM to run r1 (process group {pid})" in stopped.stdout
        reaper(pid)
        status = _run_remote(dry_run("tpu_status.sh", *TARGET, "--run", "r1")[1], home)
        assert status.stdout.split(" ", 1)[1] == "r1 stopped: step 1 loss 0.5\n"
    finally:
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
            reaper(pid)


# ---------------------------------------------------------------- supervisor mode (tpu_train.sh --restart)

FAKE_CLOUD = Path(__file__).resolve().parent / "fake_tpu_cloud.py"
RESTART = ["--restart", "--accelerator", "v4-16", "--spot", "--source", "imagen-jax==0.1"]


def test_restart_dry_run_prints_start_watch_and_one_restart(config_dir):
    config = str(config_dir / "base64_2b.py")
    lines = dry_run_text(
        "tpu_train.sh", *TARGET, "--config", config, "--workdir", "gs://b/r", *RESTART, "--gcsfuse", "b", "--poll", "30"
    ).splitlines()
    plain = dry_run("tpu_train.sh", *TARGET, "--config", config, "--workdir", "gs://b/r")
    assert [shlex.split(x) for x in lines[1:4]] == plain
    assert (
        lines[0] == "# start"
        and lines[4] == "# watch, every 30 s"
        and lines[7] == "# restart after a preemption (at most 10)"
    )
    assert shlex.split(lines[5]) == DESCRIBE + ["--format=value(state.state)"]
    assert "run-state $(hostname) $s" in _remote(shlex.split(lines[6]))
    assert shlex.split(lines[8]) == [
        "gcloud",
        "compute",
        "tpus",
        "queued-resources",
        "delete",
        "pod",
        *SCOPE,
        "--force",
        "--quiet",
    ]
    create = shlex.split(lines[9])
    assert create[:5] == ["gcloud", "compute", "tpus", "queued-resources", "create"] and create[-5:] == [
        "--accelerator-type",
        "v4-16",
        "--runtime-version",
        "tpu-ubuntu2204-base",
        "--spot",
    ]
    assert shlex.split(lines[10]) == DESCRIBE + ["--format=value(state.state)"]
    assert "pip install --upgrade imagen-jax==0.1 'jax[tpu]'" in _remote(shlex.split(lines[11]))
    assert "gcsfuse --implicit-dirs b /gcs/b" in _remote(shlex.split(lines[12]))
    assert [shlex.split(x) for x in lines[13:]] == plain


def test_restart_errors(config_dir):
    args = (*TARGET, "--config", str(config_dir / "base64_2b.py"), "--workdir", "gs://b/r")
    assert "--restart needs --accelerator TYPE" in fails("tpu_train.sh", *args, "--restart", "--source", "x")
    assert "--restart needs --source PIP_SPEC or --wheel FILE" in fails(
        "tpu_train.sh", *args, "--restart", "--accelerator", "v4-8"
    )
    assert "--poll is an option of the supervisor mode: add --restart" in fails("tpu_train.sh", *args, "--poll", "5")
    assert "--poll expects seconds > 0" in fails("tpu_train.sh", *args, *RESTART, "--poll", "0")
    assert "--max-restarts expects a whole number" in fails("tpu_train.sh", *args, *RESTART, "--max-restarts", "-1")


def supervise(tmp_path, config_dir, scenario, *extra, state="ACTIVE"):
    """tpu_train.sh --restart against the fake slice of fake_tpu_cloud.py (2 workers, in `state`,
    each run playing `scenario`), polling every 0.2 s, under a reaper as a worker's init is.
    Returns (the finished process, the gcloud calls, the fake cloud's root)."""
    sys.path.insert(0, str(FAKE_CLOUD.parent))
    import fake_tpu_cloud

    cloud = tmp_path / "cloud"
    for worker in fake_tpu_cloud.WORKERS:
        (cloud / "workers" / worker).mkdir(parents=True)
    (cloud / "state").write_text(state)
    (cloud / "scenario.json").write_text(json.dumps(scenario))
    bin_dir = tmp_path / "cloud_bin"
    bin_dir.mkdir()
    _, python = fake_tpu_cloud.install(bin_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEN_JAX_", "SLURM_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_TPU_CLOUD=str(cloud))
    command = ["bash", str(LAUNCH / "tpu_train.sh"), *TARGET, "--config", str(config_dir / "base64_2b.py")]
    command += ["--workdir", "gs://b/run", "--python", str(python), *RESTART, "--poll", "0.2", *extra]
    proc = subprocess.run(
        [sys.executable, str(FAKE_CLOUD), "reap", *command], env=env, capture_output=True, text=True, timeout=120
    )
    calls = [json.loads(line) for line in (cloud / "calls.jsonl").read_text().splitlines()]
    return proc, calls, cloud


def _kind(call: list[str]) -> str:
    """A gcloud call in one word: describe, delete, create, scp, or what an ssh does."""
    if call[:3] == ["compute", "tpus", "queued-resources"]:
        return call[3]
    if call[3] == "scp":
        return "scp"
    remote = _remote(call)
    for word, kind in (
        ("setsid nohup", "start"),
        ("run-state", "watch"),
        ("pip install", "setup"),
        ("mkdir -p", "mkdir"),
    ):
        if word in remote:
            return kind
    return "ssh"


def _collapse(kinds: list[str]) -> list[str]:
    """Runs of the same kind as one (the number of polls depends on timing)."""
    return [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]


def test_supervisor_recreates_a_preempted_slice_sets_it_up_and_resumes_the_run(tmp_path, config_dir):
    proc, calls, cloud = supervise(
        tmp_path,
        config_dir,
        [{"w0": "preempt", "w1": "preempt"}, {"w0": "finish", "w1": "finish"}],
        "--max-restarts",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    assert "restart 1 of at most 3: the slice is SUSPENDED (preempted, or a host failed)" in proc.stderr
    assert "queued resource pod: PROVISIONING" in proc.stderr and "queued resource pod: ACTIVE" in proc.stderr
    assert "run run finished on every worker (2 finished)" in proc.stderr
    kinds = _collapse([_kind(c) for c in calls])
    restart = kinds.index("delete")
    assert kinds[:4] == ["describe", "mkdir", "scp", "start"] and set(kinds[4:restart]) == {"describe", "watch"}
    assert kinds[restart : restart + 7] == ["delete", "create", "describe", "setup", "mkdir", "scp", "start"]
    assert set(kinds[restart + 7 :]) == {"describe", "watch"} and kinds[-1] == "watch"
    create = next(c for c in calls if _kind(c) == "create")
    assert create[-5:] == ["--accelerator-type", "v4-16", "--runtime-version", "tpu-ubuntu2204-base", "--spot"]
    for worker in ("w0", "w1"):  # the same run twice on each worker; the new VM got the configs again
        launches = [json.loads(x) for x in (cloud / f"launches-{worker}.jsonl").read_text().splitlines()]
        assert len(launches) == 2 and launches[0] == launches[1]
        assert launches[0][launches[0].index("--workdir") + 1] == "gs://b/run"
        assert (cloud / "workers" / worker / "imagen_jax_runs/run/configs/base64_2b.py").exists()
        assert (cloud / "workers" / worker / "imagen_jax_logs/run.status").read_text() == "finished\n"


def test_supervisor_refuses_a_slice_that_is_not_active(tmp_path, config_dir):
    proc, calls, _ = supervise(tmp_path, config_dir, [{"w0": "finish", "w1": "finish"}], state="PROVISIONING")
    assert proc.returncode == 2 and [_kind(c) for c in calls] == ["describe"]
    assert "queued resource pod is PROVISIONING, not ACTIVE: start the supervisor once" in proc.stderr


def test_supervisor_relaunches_on_the_same_slice_after_a_failure_and_stops_at_the_limit(tmp_path, config_dir):
    proc, calls, cloud = supervise(tmp_path, config_dir, [{"w0": "vanish", "w1": "fail"}], "--max-restarts", "2")
    assert proc.returncode == 1
    # Both outcomes come after 0.5 s: a poll may see one worker ended and the other still
    # running (on a loaded machine), or both ended; any of these restarts the run.
    tally = r"workers: (1 failed, 1 gone|1 failed, 1 running|1 gone, 1 running)"
    for line in (r"restart 1 of at most 2: ", r"restart 2 of at most 2: ", r"giving up after 2 restarts: "):
        assert re.search(line + tally, proc.stderr), proc.stderr[-2000:]
    kinds = [_kind(c) for c in calls]
    assert "create" not in kinds and "delete" not in kinds and kinds.count("start") == 3
    assert kinds.count("ssh") == 2  # tpu_stop.sh --signal KILL before each relaunch
    for worker in ("w0", "w1"):
        assert len((cloud / f"launches-{worker}.jsonl").read_text().splitlines()) == 3


# ---------------------------------------------------------------- slurm_gpu.sbatch

SLURM_ENV = {
    "SLURM_JOB_NODELIST": "gpu-node-[001-002]",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NTASKS": "2",
    "SLURM_JOB_ID": "4242",
}
TASK_SHELL = ["bash", "-c", 'export IMAGEN_JAX_PROCESS_ID="$SLURM_PROCID"; exec "$@"', "imagen-jax-task"]


@pytest.fixture
def slurm_bin(tmp_path) -> Path:
    """scontrol that expands the node list; srun that runs each task with its SLURM_PROCID."""
    bin_dir = tmp_path / "slurm_bin"
    bin_dir.mkdir()
    executable(
        bin_dir / "scontrol",
        '#!/bin/sh\n[ "$1 $2 $3" = "show hostnames gpu-node-[001-002]" ] || exit 1\n'
        "echo gpu-node-001\necho gpu-node-002\n",
    )
    executable(
        bin_dir / "srun",
        '#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\nfor id in 0 1; do SLURM_PROCID=$id "$@" || exit; done\n',
    )
    return bin_dir


def test_slurm_dry_run(slurm_bin):
    assert dry_run(
        "slurm_gpu.sbatch",
        "--config",
        "configs/base64_2b.py",
        "--workdir",
        "/shared/my runs/b64",
        "--config.seed=1",
        env=SLURM_ENV,
        path_prefix=slurm_bin,
    ) == [
        [
            "srun",
            "--ntasks-per-node=1",
            "--kill-on-bad-exit=1",
            "env",
            "IMAGEN_JAX_COORDINATOR=gpu-node-001:24242",
            "IMAGEN_JAX_NUM_PROCESSES=2",
            *TASK_SHELL,
            "python3",
            "-m",
            "imagen_jax.cli",
            "train",
            "--config",
            "configs/base64_2b.py",
            "--workdir",
            "/shared/my runs/b64",
            "--no-progress",
            "--config.seed=1",
        ]
    ]
    port = dry_run(
        "slurm_gpu.sbatch", "--config", "c.py", "--workdir", "w", "--port", "6000", env=SLURM_ENV, path_prefix=slurm_bin
    )[0][4]
    assert port == "IMAGEN_JAX_COORDINATOR=gpu-node-001:6000"


def test_slurm_errors(slurm_bin):
    assert "not inside a SLURM job: submit with sbatch" in fails(
        "slurm_gpu.sbatch", "--config", "c.py", "--workdir", "w", "--dry-run"
    )
    assert fails("slurm_gpu.sbatch", "--workdir", "w", env=SLURM_ENV, path_prefix=slurm_bin).endswith(
        "error: --config is required"
    )
    assert "submit with --ntasks-per-node=1" in fails(
        "slurm_gpu.sbatch",
        "--config",
        "c.py",
        "--workdir",
        "w",
        env={**SLURM_ENV, "SLURM_NTASKS": "16"},
        path_prefix=slurm_bin,
    )
    assert "--port expects a port number" in fails(
        "slurm_gpu.sbatch",
        "--config",
        "c.py",
        "--workdir",
        "w",
        "--port",
        "99999",
        env=SLURM_ENV,
        path_prefix=slurm_bin,
    )
    assert "unknown option '--name'" in fails("slurm_gpu.sbatch", "--name", "pod")


def test_slurm_job_from_spool_copy_gives_each_task_its_process_id(slurm_bin, tmp_path):
    """As sbatch does: the script runs from a copy elsewhere and finds common.sh in the
    submission directory; every task gets the coordinator, the count and its own id."""
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(LAUNCH / "slurm_gpu.sbatch", spool / "slurm_script")
    fake_python = executable(
        tmp_path / "python",
        '#!/bin/sh\necho "$IMAGEN_JAX_COORDINATOR $IMAGEN_JAX_NUM_PROCESSES $IMAGEN_JAX_PROCESS_ID $*"\n',
    )
    env = {
        **os.environ,
        **SLURM_ENV,
        "SLURM_SUBMIT_DIR": str(LAUNCH.parent),
        "PATH": f"{slurm_bin}{os.pathsep}{os.environ['PATH']}",
    }
    result = subprocess.run(
        ["bash", str(spool / "slurm_script"), "--config", "c.py", "--workdir", "w x", "--python", str(fake_python)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"gpu-node-001:24242 2 {i} -m imagen_jax.cli train --config c.py --workdir w x --no-progress" for i in (0, 1)
    ]


# ---------------------------------------------------------------- shellcheck


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not on PATH (apt-get install shellcheck)")
    files = [str(LAUNCH / name) for name in (*SCRIPTS, "common.sh")]
    result = subprocess.run(["shellcheck", "--external-sources", *files], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
