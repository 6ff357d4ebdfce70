"""Host memory of `imagen-jax sample` against the length of the prompt list: the peak resident
set of the whole command (psutil, polled every 50 ms, children included) for N prompts.
Streaming writes each batch at once, so the peak should not grow with N.

    python benchmarks/sample_memory.py                       # N = 32, 256, 1024
    python benchmarks/sample_memory.py --prompts 32 4096 --batch-size 16 --num-steps 2

The stages are the shapes presets (configs/shapes_base32.py -> configs/shapes_sr64.py) with
random params (memory does not depend on what the params are), written as train workdirs
in a temporary folder; every run samples 32 px -> 64 px with --num-steps steps per stage.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from results_io import RESULTS_DIR, write_results

REPO = Path(__file__).resolve().parents[1]
WORDS = ("red", "green", "blue", "yellow", "purple", "orange", "pink", "white", "black", "gray")
SHAPES = ("circle", "square", "triangle", "star", "hexagon")


def make_workdir(root: Path, preset: str) -> str:
    """A train workdir of `preset` holding one checkpoint of random params."""
    import jax

    from imagen_jax.config import load_config, to_dict
    from imagen_jax.models import build_model, init_params
    from imagen_jax.train import make_optimizer
    from imagen_jax.train.checkpoints import Checkpoints
    from imagen_jax.train.state import init_state
    from imagen_jax.train.workdir import check_workdir_config

    config = load_config(REPO / "configs" / f"{preset}.py")
    workdir = str(root / preset)
    check_workdir_config(config, workdir, override=False)
    params = init_params(build_model(config), config, jax.random.key(0))
    optimizer, _ = make_optimizer(config.optimizer, config.train.steps)
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), save_every=1, async_save=False)
    checkpoints.save(1, init_state(params, optimizer), to_dict(config), force=True)
    checkpoints.close()
    return workdir


def peak_rss_mib(command: list[str], env: dict) -> tuple[float, float]:
    """(peak resident MiB of the process tree, seconds) of `command`."""
    start = time.perf_counter()
    proc = psutil.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc] + proc.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.read().decode()[-3000:])
    return peak / 2**20, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, nargs="+", default=[32, 256, 1024])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-steps", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS_DIR / "sample_memory.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="imagen_jax_sample_memory_") as tmp:
        root = Path(tmp)
        workdirs = [make_workdir(root, "shapes_base32"), make_workdir(root, "shapes_sr64")]
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        for n in args.prompts:
            prompts = root / f"prompts_{n}.txt"
            prompts.write_text("".join(f"a {WORDS[i % 10]} {SHAPES[i // 10 % 5]} number {i}\n" for i in range(n)))
            command = [sys.executable, "-m", "imagen_jax.cli", "sample", "--no-progress"]
            command += ["--prompts-file", str(prompts)]
            command += ["--out", str(root / f"out_{n}"), "--batch-size", str(args.batch_size)]
            for i, w in enumerate(workdirs):
                command += ["--workdir", w, f"--config.{i}.sampling.num_steps={args.num_steps}"]
            mib, seconds = peak_rss_mib(command, env)
            images = len(list((root / f"out_{n}").glob("*.png"))) - 1  # less the grid
            rows.append({"prompts": n, "images": images, "peak_rss_mib": round(mib, 1), "seconds": round(seconds, 1)})
            print(f"{n:6d} prompts: peak RSS {mib:7.1f} MiB, {seconds:6.1f} s, {images} images")
    write_results(args.out, {"batch_size": args.batch_size, "num_steps": args.num_steps, "rows": rows})


if __name__ == "__main__":
    main()
