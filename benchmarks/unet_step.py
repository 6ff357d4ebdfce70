"""Forward and forward+backward time of a UNet preset on the current backend, with XLA's
FLOP count (compiled cost analysis) and the achieved TFLOP/s.

    python benchmarks/unet_step.py --config configs/shapes_base32.py --batch 8
    python benchmarks/unet_step.py --config configs/sr256_600m.py --batch 4 --peak-tflops 990
    python benchmarks/unet_step.py --config configs/base64_2b.py --batch 1 --flops-only

Prints a table and writes JSON (default benchmarks/results/unet_step_<preset>_<backend>_b<batch>.json).
The loss is the eps-prediction MSE against a random target; no optimizer update is timed.
--flops-only lowers the programs on abstract shapes (no parameter memory, nothing run) and
reports XLA's FLOP count alone, e.g. for the paper presets on a small machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.config import load_config
from imagen_jax.models.builder import (
    abstract_params,
    build_model,
    dummy_inputs,
    init_params,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def random_inputs(config, batch: int, text_length: int, key):
    """Inputs of the right shapes: z, eps target ~ N(0, 1), logsnr ~ U(-20, 20), text with half the tokens valid."""
    inputs = dummy_inputs(config, batch, text_length)
    keys = jax.random.split(key, 5)
    inputs["z"] = jax.random.normal(keys[0], inputs["z"].shape)
    inputs["logsnr"] = jax.random.uniform(keys[1], (batch,), minval=-20.0, maxval=20.0)
    inputs["text_embedding"] = jax.random.normal(keys[2], inputs["text_embedding"].shape)
    inputs["text_mask"] = jnp.arange(text_length)[None, :] < text_length // 2 + jnp.arange(batch)[:, None] % (
        text_length // 2
    )
    if "low_res" in inputs:
        inputs["low_res"] = jnp.tanh(jax.random.normal(keys[3], inputs["low_res"].shape))
        inputs["aug_logsnr"] = jax.random.uniform(keys[4], (batch,), minval=-5.0, maxval=20.0)
    return inputs, jax.random.normal(keys[0], inputs["z"].shape)


def compiled_flops(compiled) -> float:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def lowered_flops(lowered) -> float:
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def time_call(fn, args, iters: int) -> list[float]:
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return times


def benchmark(config, batch: int, text_length: int, iters: int, flops_only: bool = False) -> dict:
    model = build_model(config)
    if flops_only:
        params = nn.meta.unbox(abstract_params(model, config))
        inputs = dummy_inputs(config, batch, text_length, abstract=True)
        target = jax.ShapeDtypeStruct(inputs["z"].shape, jnp.float32)
    else:
        params = init_params(model, config, jax.random.key(0))
        inputs, target = random_inputs(config, batch, text_length, jax.random.key(1))

    def forward(params, inputs):
        return model.apply({"params": params}, **inputs)

    def loss(params, inputs, target):
        return jnp.mean(jnp.square(model.apply({"params": params}, **inputs, train=True) - target))

    results = {}
    for name, fn, args in (
        ("forward", forward, (params, inputs)),
        ("forward_backward", jax.value_and_grad(loss), (params, inputs, target)),
    ):
        lowered = jax.jit(fn).lower(*args)
        if flops_only:
            results[name] = dict(flops=lowered_flops(lowered))
            continue
        start = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - start
        times = time_call(compiled, args, iters)
        seconds = statistics.median(times)
        flops = compiled_flops(compiled)
        results[name] = dict(
            seconds=seconds,
            min_seconds=min(times),
            compile_seconds=compile_s,
            flops=flops,
            tflops_per_s=flops / seconds / 1e12,
        )
    return dict(params=sum(int(x.size) for x in jax.tree_util.tree_leaves(params)), **results)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="config file, e.g. configs/shapes_base32.py")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--dtype", help="override model.dtype (compute), e.g. float32 or bfloat16")
    parser.add_argument("--remat", choices=["true", "false"], help="override model.remat")
    parser.add_argument(
        "--flops-only", action="store_true", help="only XLA's FLOP count, on abstract shapes (no memory)"
    )
    parser.add_argument("--peak-tflops", type=float, help="device peak (design.md §6) to report MFU")
    parser.add_argument("--out", help="JSON output path")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    if args.dtype:
        config.model.dtype = args.dtype
    if args.remat:
        config.model.remat = args.remat == "true"
    preset = Path(args.config).stem
    result = benchmark(config, args.batch, args.text_length, args.iters, args.flops_only)
    device = jax.devices()[0]
    record = dict(
        preset=preset,
        backend=jax.default_backend(),
        device=device.device_kind,
        device_count=1,
        batch=args.batch,
        resolution=config.resolution,
        text_length=args.text_length,
        dtype=str(config.model.dtype),
        remat=bool(config.model.remat),
        jax_version=jax.__version__,
        **result,
    )
    if args.peak_tflops and not args.flops_only:
        for name in ("forward", "forward_backward"):
            record[name]["mfu"] = record[name]["tflops_per_s"] / args.peak_tflops

    print(
        f"{preset} on {record['backend']} ({record['device']}), batch {args.batch}, {record['resolution']} px, "
        f"{record['params'] / 1e6:.2f}M params, dtype {record['dtype']}, remat {record['remat']}"
    )
    print(
        f"{'pass':<18} {'ms (median)':>12} {'GFLOP':>10} {'TFLOP/s':>9} {'compile s':>10}"
        + (f" {'MFU':>6}" if args.peak_tflops else "")
    )
    for name in ("forward", "forward_backward"):
        r = record[name]
        if args.flops_only:
            print(f"{name:<18} {'-':>12} {r['flops'] / 1e9:>10.2f}")
            continue
        line = (
            f"{name:<18} {1e3 * r['seconds']:>12.1f} {r['flops'] / 1e9:>10.2f} {r['tflops_per_s']:>9.4f} "
            f"{r['compile_seconds']:>10.1f}"
        )
        if args.peak_tflops:
            line += f" {100 * r['mfu']:>5.1f}%"
        print(line)
    suffix = "_flops" if args.flops_only else ""
    out = (
        Path(args.out)
        if args.out
        else RESULTS_DIR / f"unet_step_{preset}_{record['backend']}_b{args.batch}{suffix}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
