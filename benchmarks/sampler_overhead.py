"""Per-step cost of the sampler loop itself, with a trivial model (one multiply-add).

So that later UNet sampling timings cannot hide sampler overhead: this measures the
guidance batching, thresholding (dynamic thresholding sorts each sample), the update
rule and the fresh noise per step, for each sampler kind, on the current backend.

    python benchmarks/sampler_overhead.py [--steps 64] [--repeats 5] [--out benchmarks/results/sampler_overhead.json]

Prints a table and writes JSON (one row per configuration; times are medians).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
from results_io import write_results

from imagen_jax.diffusion import SamplerConfig, sample


def trivial_model(z, logsnr, cond):
    """eps_hat = 0.1 z + c: the cheapest model that still depends on z and on the condition."""
    return 0.1 * z + cond["c"][:, None, None, None]


def time_config(kind, threshold, guided, shape, steps, repeats):
    config = SamplerConfig(kind=kind, num_steps=steps, threshold=threshold)
    cond = {"c": jnp.full((shape[0],), 0.1)}
    uncond = {"c": jnp.zeros((shape[0],))} if guided else None

    def run(seed):
        out = sample(
            trivial_model, jax.random.key(seed), shape, config=config, cond=cond, uncond=uncond, guidance_weight=5.0
        )
        return out.block_until_ready()

    start = time.perf_counter()
    run(0)
    compile_s = time.perf_counter() - start
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        run(r + 1)
        times.append(time.perf_counter() - start)
    total = statistics.median(times)
    return {
        "kind": kind,
        "threshold": threshold,
        "guided": guided,
        "shape": list(shape),
        "steps": steps,
        "first_call_s": compile_s,
        "sample_s": total,
        "per_step_ms": 1e3 * total / steps,
        "per_step_per_image_us": 1e6 * total / steps / shape[0],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shapes", default="16x64x64x3,4x256x256x3", help="comma-separated BxHxWxC")
    parser.add_argument("--out", default="benchmarks/results/sampler_overhead.json")
    args = parser.parse_args()

    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    rows = []
    for shape in shapes:
        for kind in ("ancestral", "ddim", "dpm_solver_pp_2m"):
            for threshold, guided in (("none", False), ("static", True), ("dynamic", True)):
                rows.append(time_config(kind, threshold, guided, shape, args.steps, args.repeats))

    header = (
        f"{'shape':>16} {'sampler':>17} {'threshold':>9} {'guided':>6} {'first call s':>12} {'ms/step':>9} "
        f"{'us/step/img':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{'x'.join(map(str, r['shape'])):>16} {r['kind']:>17} {r['threshold']:>9} {str(r['guided']):>6} "
            f"{r['first_call_s']:>12.2f} {r['per_step_ms']:>9.3f} {r['per_step_per_image_us']:>11.1f}"
        )
    write_results(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
