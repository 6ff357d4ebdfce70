"""Images/s, TFLOP/s and MFU of the real train step (optimizer update and EMA included)
for a config on the current backend, on synthetic batches (no data pipeline, no T5).

    python benchmarks/train_step.py --config configs/shapes_base32.py --batch 32
    python benchmarks/train_step.py --config configs/base64_2b.py --batch 8 --steps 10

The step is the one `imagen-jax train` runs: sharded over all devices by the config's
mesh, compiled ahead of time with donation. FLOPs are XLA's count for the compiled program
(per device); MFU uses the chip's bf16 peak (design.md §6) and is omitted where unknown (CPU).
Prints a table and writes JSON (default benchmarks/results/train_step_<preset>_<backend>_b<batch>.json).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from results_io import RESULTS_DIR, write_results

from imagen_jax.cli import split_config_overrides
from imagen_jax.config import apply_overrides, load_config
from imagen_jax.parallel import make_mesh, rules_from_config
from imagen_jax.train.hardware import peak_tflops
from imagen_jax.train.program import compile_training


def synthetic_batch(specs, shardings, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in specs.items():
        if spec.dtype == np.bool_:
            value = np.arange(spec.shape[1])[None, :] < rng.integers(4, spec.shape[1] + 1, (spec.shape[0], 1))
        else:
            value = rng.uniform(-1, 1, spec.shape).astype(spec.dtype)
        out[name] = jax.device_put(value, shardings[name])
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--batch", type=int, default=None, help="global batch (default: train.batch_size)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument("--text-length", type=int, default=None, help="text tokens (default: data.max_text_length)")
    parser.add_argument("--out", default=None)
    parser.epilog = "Config fields are overridden as in imagen-jax train: --config.SECTION.FIELD=VALUE."
    rest, overrides = split_config_overrides(sys.argv[1:])
    args = parser.parse_args(rest)

    config = apply_overrides(load_config(args.config), overrides)
    if args.text_length:
        config.data.max_text_length = args.text_length
    batch = args.batch or config.train.batch_size
    mesh = make_mesh(config.mesh.data, config.mesh.fsdp)
    start = time.perf_counter()
    program = compile_training(config, mesh, rules_from_config(config.mesh.get("rules")), batch, jax.random.key(0))
    state, compiled, specs = program.state, program.step, program.batch_specs
    compile_s = time.perf_counter() - start
    data = synthetic_batch(specs, program.batch_shardings)
    key = jax.random.key(1)
    state, metrics = compiled(state, data, key)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        state, metrics = compiled(state, data, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    flops = program.flops_per_device
    device = jax.devices()[0]
    peak = peak_tflops(device.device_kind)
    row = {
        "config": args.config,
        "backend": jax.default_backend(),
        "device_kind": device.device_kind,
        "devices": jax.device_count(),
        "mesh": dict(mesh.shape),
        "batch": batch,
        "params": int(sum(x.size for x in jax.tree_util.tree_leaves(state.params))),
        "dtype": config.model.get("dtype", "float32"),
        "compile_s": compile_s,
        "step_s": step_s,
        "step_s_all": times,
        "images_per_sec": batch / step_s,
        "flops_per_device": flops,
        "tflops_per_device": flops / step_s / 1e12,
        "mfu": (flops / step_s / 1e12 / peak) if peak else None,
        "loss": float(metrics["loss"]),
    }
    print(
        f"{'config':>28} {'backend':>8} {'batch':>6} {'params':>12} {'step s':>8} {'img/s':>8} "
        f"{'TFLOP/s/dev':>11} {'MFU':>6}"
    )
    mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
    print(
        f"{Path(args.config).stem:>28} {row['backend']:>8} {batch:>6} {row['params']:>12,} {step_s:>8.3f} "
        f"{row['images_per_sec']:>8.1f} {row['tflops_per_device']:>11.3f} {mfu:>6}"
    )
    out = (
        Path(args.out)
        if args.out
        else RESULTS_DIR / f"train_step_{Path(args.config).stem}_{row['backend']}_b{batch}.json"
    )
    write_results(out, row)


if __name__ == "__main__":
    main()
