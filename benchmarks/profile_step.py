"""Where the time of a UNet forward + backward goes: a jax.profiler trace of the compiled
program, each executed op's time summed by kind (convolution, matmul, reduction,
elementwise, copy/transpose) and by layer group (the ops' top-level flax module, blocks and
attention layers of one level together, forward and backward apart).

    python benchmarks/profile_step.py                      # the UNet compare_imagen_pytorch.py matches
    python benchmarks/profile_step.py --config configs/shapes_base32.py --batch 32 --text-length 32

Op kinds come from the compiled HLO (what each fusion computes); layers from the ops'
metadata (weight-gradient convolutions carry none and show as "(no metadata)"). Times are
summed over the runs' threads and divided by --runs. Prints two tables and writes JSON
(default benchmarks/results/profile_step_<name>_<backend>_b<batch>.json).
"""

from __future__ import annotations

import argparse
import collections
import re
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from results_io import RESULTS_DIR, write_results
from unet_step import random_inputs

from imagen_jax.config import load_config
from imagen_jax.models import build_model
from imagen_jax.models.builder import init_params

KIND_PATTERNS = (
    ("convolution", " convolution("),
    ("matmul", " dot("),
    ("reduction", " reduce("),
    ("copy/transpose", " transpose("),
    ("copy/transpose", " copy("),
)


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """instruction name -> (kind, layer path) for every instruction of the compiled HLO."""
    bodies, current = collections.defaultdict(list), None
    for line in hlo_text.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            current = header.group(1)
        elif current:
            bodies[current].append(line)
    out = {}
    for line in hlo_text.splitlines():
        name = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if not name:
            continue
        called = re.search(r"calls=%?([\w.\-]+)", line)
        text = " ".join(bodies.get(called.group(1), [])) if called else line
        kind = next((k for k, pattern in KIND_PATTERNS if pattern in text), "elementwise/other")
        op_name = re.search(r'op_name="([^"]+)"', line)
        layer = "(no metadata)"
        if op_name:
            path = re.sub(r"jit\([^)]*\)/", "", op_name.group(1))
            direction = "backward" if "transpose(" in path else "forward"
            modules = [p for p in re.sub(r"\w+\(|\)", "", path).split("/")[1:-1] if p and p != "UNet"]
            top = re.sub(r"_(block|attention)_\d+$", r"_\1s", modules[0]) if modules else "(top)"
            layer = f"{direction} {top}"
        out[name.group(1)] = (kind, layer)
    return out


def profile(fn, args, runs: int) -> dict[str, float]:
    """event name -> summed duration (ms) per run, from a jax.profiler trace."""
    with tempfile.TemporaryDirectory() as directory:
        jax.profiler.start_trace(directory)
        for _ in range(runs):
            jax.block_until_ready(fn(*args))
        jax.profiler.stop_trace()
        trace = next(Path(directory).rglob("*.xplane.pb"))
        data = jax.profiler.ProfileData.from_file(str(trace))
    times = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            for event in line.events:
                times[event.name] += event.duration_ns / 1e6 / runs
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config file (default: the UNet compare_imagen_pytorch.py matches)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-length", type=int, default=16)
    parser.add_argument("--runs", type=int, default=2, help="profiled runs after one warm-up")
    parser.add_argument("--top", type=int, default=15, help="layers to list")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    if args.config:
        config, name = load_config(args.config), Path(args.config).stem
    else:
        from compare_imagen_pytorch import Architecture, matched_config

        config, name = matched_config(Architecture()), "compare_imagen_pytorch_matched"
    model = build_model(config)
    params = init_params(model, config, jax.random.key(0))
    inputs, target = random_inputs(config, args.batch, args.text_length, jax.random.key(1))

    def loss(params, inputs, target):
        return jnp.mean(jnp.square(model.apply({"params": params}, **inputs, train=True) - target))

    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, inputs, target).compile()
    call_args = (params, inputs, target)
    jax.block_until_ready(compiled(*call_args))
    start = time.perf_counter()
    jax.block_until_ready(compiled(*call_args))
    wall_s = time.perf_counter() - start
    instructions = hlo_instructions(compiled.as_text())
    times = {k: v for k, v in profile(compiled, call_args, args.runs).items() if k in instructions}

    by_kind, by_layer = collections.Counter(), collections.Counter()
    for event, ms in times.items():
        kind, layer = instructions[event]
        by_kind[kind] += ms
        by_layer[layer] += ms
    total = sum(by_kind.values())
    print(
        f"{name}: forward + backward, batch {args.batch}, one run {wall_s:.3f} s wall; "
        f"op time {total:.0f} ms per run (both threads)"
    )
    print(f"{'op kind':<20} {'ms':>8} {'share':>7}")
    for kind, ms in by_kind.most_common():
        print(f"{kind:<20} {ms:>8.1f} {ms / total:>7.1%}")
    print(f"\n{'layer':<60} {'ms':>8} {'share':>7}")
    for layer, ms in by_layer.most_common(args.top):
        print(f"{layer[:60]:<60} {ms:>8.1f} {ms / total:>7.1%}")
    out = args.out or RESULTS_DIR / f"profile_step_{name}_{jax.default_backend()}_b{args.batch}.json"
    write_results(
        out,
        dict(
            name=name,
            batch=args.batch,
            text_length=args.text_length,
            runs=args.runs,
            wall_s=wall_s,
            op_ms_by_kind=dict(by_kind),
            op_ms_by_layer=dict(by_layer),
        ),
    )


if __name__ == "__main__":
    main()
