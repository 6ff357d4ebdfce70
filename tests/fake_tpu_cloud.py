"""A TPU slice on this machine for the launch scripts' supervisor tests, in three roles:

  gcloud ARG...   (installed as `gcloud`, see `install`): queued-resources describe/create/delete keep the
                  slice's state in ROOT/state; tpu-vm ssh runs the remote command with bash
                  in each worker's home ROOT/workers/wI (HOME set, WORKER=wI), in order;
                  tpu-vm scp copies files there. A created slice is PROVISIONING for one
                  describe, then ACTIVE, and its workers' homes start empty (a new VM).
                  Every call is appended to ROOT/calls.jsonl.
  python ARG...   (installed as the workers' interpreter): `-m pip ...` and `-m imagen_jax.cli
                  --version` succeed; `-m imagen_jax.cli train ... --status-file F` plays
                  the next outcome of ROOT/scenario.json for this worker: after a short
                  run, "preempt" writes 'preempted' and takes the slice away (SUSPENDED),
                  "finish" writes 'finished', "fail" writes 'failed: ...', "vanish" exits
                  without a status (as a killed process would).
  reap CMD...     run CMD as a child subreaper (the init of a worker reaps the detached
                  runs; without it they would stay zombies that answer kill -0) and exit
                  with CMD's status.

ROOT is $FAKE_TPU_CLOUD.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORKERS = ("w0", "w1")


def root() -> Path:
    return Path(os.environ["FAKE_TPU_CLOUD"])


def state_file() -> Path:
    return root() / "state"


def gcloud(argv: list[str]) -> int:
    with open(root() / "calls.jsonl", "a") as calls:
        calls.write(json.dumps(argv) + "\n")
    state = state_file().read_text().strip() if state_file().exists() else "NOT_FOUND"
    if argv[:3] == ["compute", "tpus", "queued-resources"]:
        verb = argv[3]
        if verb == "describe":
            if state == "NOT_FOUND":
                print("ERROR: (gcloud) NOT_FOUND", file=sys.stderr)
                return 1
            print(state)
            if state == "PROVISIONING":
                state_file().write_text("ACTIVE")
            return 0
        if verb == "delete":
            state_file().unlink(missing_ok=True)
            return 0
        if verb == "create":
            if state != "NOT_FOUND":
                print("ERROR: (gcloud) ALREADY_EXISTS", file=sys.stderr)
                return 1
            shutil.rmtree(root() / "workers", ignore_errors=True)
            for worker in WORKERS:
                (root() / "workers" / worker).mkdir(parents=True)
            state_file().write_text("PROVISIONING")
            return 0
    if argv[:3] == ["compute", "tpus", "tpu-vm"] and state != "ACTIVE":
        print(f"ERROR: (gcloud) the TPU is {state}", file=sys.stderr)
        return 255
    if argv[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
        command = argv[argv.index("--command") + 1]
        status = 0
        for worker in WORKERS:
            home = root() / "workers" / worker
            env = dict(os.environ, HOME=str(home), WORKER=worker)
            status = subprocess.run(["bash", "-c", command], cwd=home, env=env).returncode or status
        return status
    if argv[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
        at = next(i for i, a in enumerate(argv) if i > 3 and ":" in a and not a.startswith("--"))
        target = argv[at].split(":", 1)[1]
        for worker in WORKERS:
            for source in argv[4:at]:
                shutil.copy(source, root() / "workers" / worker / target)
        return 0
    print(f"fake gcloud: unexpected call {argv}", file=sys.stderr)
    return 2


def python(argv: list[str]) -> int:
    if argv[:2] == ["-m", "pip"]:
        return 0
    if argv == ["-m", "imagen_jax.cli", "--version"]:
        print("imagen-jax (fake worker)")
        return 0
    assert argv[:3] == ["-m", "imagen_jax.cli", "train"], argv
    worker = os.environ["WORKER"]
    launches = root() / f"launches-{worker}.jsonl"
    with open(launches, "a") as f:
        f.write(json.dumps(argv[3:]) + "\n")
    attempt = len(launches.read_text().splitlines()) - 1
    scenario = json.loads((root() / "scenario.json").read_text())
    outcome = scenario[min(attempt, len(scenario) - 1)][worker]
    print(f"{worker}: attempt {attempt}: {outcome}", flush=True)
    time.sleep(0.5)
    status = Path(argv[argv.index("--status-file") + 1])
    if outcome == "preempt":
        status.write_text("preempted\n")
        state_file().write_text("SUSPENDED")
    elif outcome == "finish":
        status.write_text("finished\n")
    elif outcome == "fail":
        status.write_text("failed: RuntimeError: a host lost its peer\n")
        return 1
    elif outcome != "vanish":
        raise ValueError(outcome)
    return 0


def reap(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    child = subprocess.Popen(argv)
    status = None
    while True:
        try:
            pid, code = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if pid == child.pid:
            status = os.waitstatus_to_exitcode(code)
            child.returncode = status
    return status


def install(bin_dir: Path) -> tuple[Path, Path]:
    """Executables `gcloud` and `python` in bin_dir that play those roles; returns them."""
    paths = []
    for role in ("gcloud", "python"):
        path = bin_dir / role
        path.write_text(f'#!/bin/sh\nexec {sys.executable} {Path(__file__).resolve()} {role} "$@"\n')
        path.chmod(0o755)
        paths.append(path)
    return paths[0], paths[1]


if __name__ == "__main__":
    sys.exit({"gcloud": gcloud, "python": python, "reap": reap}[sys.argv[1]](sys.argv[2:]))
