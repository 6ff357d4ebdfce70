"""`imagen-jax demo`: the built-in demo, end to end on one machine (configs/demo.py).

  imagen-jax demo --workdir runs/demo [--config configs/demo.py] [--config.base.train.steps=500]

1. trains the base stage (text -> 32 px) into <workdir>/base and the SR stage (32 -> 64 px)
   into <workdir>/sr (the shapes dataset and its caption cache are made on first use;
   an interrupted demo resumes from the stages' checkpoints);
2. samples the fixed prompt list through the cascade: <workdir>/samples/ (one PNG per
   prompt, grid.png, cascade.png = base beside SR, manifest.json);
3. evaluates: prompt accuracy of the base and final images (the base stage also over
   eval.accuracy_seeds sampling seeds), the base stage's guidance
   sweep (accuracy and out-of-range pixels with dynamic vs no thresholding), and SR
   fidelity against true test images next to bicubic; prints the tables and writes
   <workdir>/eval.json (with the time each part took).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax
import numpy as np

from imagen_jax import storage
from imagen_jax.images import make_grid, save_png, to_uint8

# The repository's configs/demo.py, wherever the command runs from (an editable install or a
# clone on PYTHONPATH; a wheel does not carry configs/).
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.py")


def guidance_sweep(cascade, prompts: list[str], weights, *, seed: int, batch_size: int) -> list[dict]:
    """Base stage only, per guidance weight w: prompt accuracy and the fraction of pixel
    values outside [-1, 1], with dynamic thresholding and with none (design.md §3)."""
    from imagen_jax.eval import out_of_range_fraction, prompt_accuracy

    base = cascade.stages[0]
    embedding, mask = cascade.encode(prompts)
    rows = []
    for w in weights:
        row = {"guidance_weight": float(w)}
        for threshold in ("dynamic", "none"):
            config = dataclasses.replace(
                base, guidance_weight=float(w), sampler=dataclasses.replace(base.sampler, threshold=threshold)
            )
            images = cascade.run_stage_batched(
                0, embedding, mask, jax.random.key(seed), batch_size=batch_size, config=config
            )
            row[threshold] = {
                "accuracy": prompt_accuracy(to_uint8(images), prompts)["correct"],
                "out_of_range": out_of_range_fraction(images),
            }
        rows.append(row)
    return rows


# Rates kept per seed: color+shape ("correct"), every stated attribute ("strict"), and parts.
_OVER_SEEDS = ("correct", "strict", "color", "shape", "background", "size", "position", "count")


def _mean(rates) -> float | None:
    """Mean of the per-seed rates; None when the prompts never state the attribute."""
    rates = [r for r in rates if r is not None]
    return float(np.mean(rates)) if rates else None


def _percent(rate) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def base_accuracy_over_seeds(cascade, prompts: list[str], seeds, *, batch_size: int) -> dict:
    """Base stage only: prompt accuracy for each sampling seed (one seed of 30 prompts
    varies by +-15 points), and the mean and range over them."""
    from imagen_jax.eval import prompt_accuracy

    embedding, mask = cascade.encode(prompts)
    per_seed = []
    for seed in seeds:
        images = cascade.run_stage_batched(0, embedding, mask, jax.random.key(seed), batch_size=batch_size)
        result = prompt_accuracy(to_uint8(images), prompts)
        per_seed.append({"seed": int(seed), **{k: result[k] for k in _OVER_SEEDS}})
    correct = [row["correct"] for row in per_seed]
    return {
        "per_seed": per_seed,
        "mean": float(np.mean(correct)),
        "min": float(min(correct)),
        "max": float(max(correct)),
        **{f"mean_{k}": _mean([row[k] for row in per_seed]) for k in _OVER_SEEDS[1:]},
    }


def sr_fidelity_on_test_images(cascade, data_config, num_images: int, *, seed: int, batch_size: int) -> dict:
    """The last stage on true low-res test images (the training pipeline's own bicubic
    downsampling) against the true high-res images, beside bicubic upsampling."""
    from imagen_jax.data.image_ops import downsample
    from imagen_jax.data.shapes_builder import parse_shapes_config_name
    from imagen_jax.eval import sr_fidelity
    from imagen_jax.eval.dataset_check import dataset_images

    stage = cascade.stages[-1]
    shapes = parse_shapes_config_name(data_config.name.split("/", 1)[1])
    truth, captions = dataset_images(num_images, stage.image_size, seed=shapes.seed, split="test")
    low = np.stack([downsample(image, stage.low_res_size, method=data_config.low_res_method) for image in truth])
    embedding, mask = cascade.encode(captions)
    outputs = cascade.run_stage_batched(
        len(cascade.stages) - 1,
        embedding,
        mask,
        jax.random.key(seed + 1),
        batch_size=batch_size,
        low_res=low.astype(np.float32) / 127.5 - 1.0,
    )
    return sr_fidelity(to_uint8(outputs), truth, low)


def sweep_table(rows: list[dict]) -> str:
    lines = [
        "guidance sweep (base stage): prompt accuracy / pixels outside [-1, 1]",
        f"  {'w':>4} {'dynamic thr.':>22} {'no threshold':>22}",
    ]
    for row in rows:
        cells = [
            f"{100 * row[t]['accuracy']:5.1f}% / {100 * row[t]['out_of_range']:5.2f}%" for t in ("dynamic", "none")
        ]
        lines.append(f"  {row['guidance_weight']:4g} {cells[0]:>22} {cells[1]:>22}")
    return "\n".join(lines)


# The demo's measured time from an empty data directory on the project's 2-core AVX-512 CPU
# (docs/experiments.md section 1); on 2-core AVX2-only CPUs everything ran about 3x slower.
MEASURED_MINUTES = 30.3  # the pretrained-encoder demo (base trained at ~96 img/s; 109 gave 27.7 before)
AVX2_ONLY_FACTOR = 3.0


def _has_avx512() -> bool | None:
    try:
        with open("/proc/cpuinfo") as f:
            return " avx512f" in f.read()
    except OSError:
        return None


def expected_duration() -> str:
    """One line: how long the default demo should take here, from the measured figure, the
    backend, the core count and whether the CPU has AVX-512."""
    measured = f"{MEASURED_MINUTES:.0f} min measured on 2 AVX-512 CPU cores"
    if jax.default_backend() != "cpu":
        return f"expected time: a few minutes on this {jax.default_backend().upper()} ({measured})"
    cores, avx512 = os.cpu_count() or 1, _has_avx512()
    minutes = MEASURED_MINUTES * (1.0 if avx512 or avx512 is None else AVX2_ONLY_FACTOR)
    kind = {True: "AVX-512", False: "AVX2, no AVX-512", None: "instruction set unknown"}[avx512]
    more = " (more cores than 2: likely less, not measured)" if cores > 2 else ""
    fewer = " (1 core: about twice that)" if cores < 2 else ""
    here = f"about {minutes:.0f} min on this CPU ({cores} cores, {kind}){more}{fewer}"
    return f"expected time with the default settings: {here}; {measured}"


def run_demo(config, workdir: str, *, override: bool = False, progress: bool = True) -> dict:
    """Train both stages, sample, evaluate; returns the eval dict written to eval.json."""
    from imagen_jax.eval import prompt_accuracy
    from imagen_jax.eval.report import accuracy_table, fidelity_table, write_json
    from imagen_jax.pipeline import Cascade
    from imagen_jax.pipeline.outputs import write_images
    from imagen_jax.train.loop import train

    workdir = os.fspath(storage.path(workdir))
    print(f"== {expected_duration()}", file=sys.stderr)
    seconds, result = {}, {}
    stage_dirs = [storage.join(workdir, "base"), storage.join(workdir, "sr")]
    for name, stage_dir in zip(("base", "sr"), stage_dirs):
        start = time.perf_counter()
        print(f"== training the {name} stage ({config[name].train.steps} steps) in {stage_dir}", file=sys.stderr)
        result[f"train_{name}"] = train(config[name], stage_dir, override=override, progress=progress)
        seconds[f"train_{name}"] = time.perf_counter() - start

    start = time.perf_counter()
    ev = config.eval
    cascade = Cascade.from_workdirs(stage_dirs)
    prompts = list(ev.prompts)
    out = cascade.sample(prompts, seed=ev.seed, batch_size=ev.batch_size, progress=progress)
    samples = storage.join(workdir, "samples")
    write_images(samples, prompts, out.final)
    write_images(storage.join(samples, "base"), prompts, out.images[0], upscale_to=64)
    side_by_side = np.stack([out.images[0].repeat(2, axis=1).repeat(2, axis=2), out.final], axis=1)
    save_png(
        make_grid(side_by_side.reshape((-1,) + out.final.shape[1:]), columns=10, upscale_to=96),
        storage.join(samples, "cascade.png"),
    )
    result["base_accuracy"] = prompt_accuracy(out.images[0], prompts)
    result["final_accuracy"] = prompt_accuracy(out.final, prompts)
    two = list(ev.two_object_prompts)
    if two:
        two_out = cascade.sample(two, seed=ev.seed, batch_size=ev.batch_size, progress=progress)
        write_images(storage.join(samples, "two_object"), two, two_out.final, upscale_to=64)
        result["two_object_accuracy"] = prompt_accuracy(two_out.images[0], two)
    seconds["sample"] = time.perf_counter() - start

    start = time.perf_counter()
    accuracy_seeds = range(ev.seed, ev.seed + ev.get("accuracy_seeds", 1))
    result["base_accuracy_over_seeds"] = base_accuracy_over_seeds(
        cascade, prompts, accuracy_seeds, batch_size=ev.batch_size
    )
    heldout = list(ev.get("heldout_prompts", ()))
    if heldout:
        heldout_seeds = range(ev.seed, ev.seed + ev.get("heldout_seeds", 1))
        result["heldout_accuracy_over_seeds"] = base_accuracy_over_seeds(
            cascade, heldout, heldout_seeds, batch_size=ev.batch_size
        )
    result["guidance_sweep"] = guidance_sweep(
        cascade, prompts, ev.guidance_weights, seed=ev.seed, batch_size=ev.batch_size
    )
    result["sr_fidelity"] = sr_fidelity_on_test_images(
        cascade, config.sr.data, ev.sr_images, seed=ev.seed, batch_size=ev.batch_size
    )
    seconds["eval"] = time.perf_counter() - start
    result["seconds"] = seconds
    write_json(result, storage.join(workdir, "eval.json"))

    print(
        "\n" + accuracy_table(result["base_accuracy"]).replace("prompt accuracy", "base stage (32 px) prompt accuracy")
    )
    print(f"final (64 px) prompt accuracy: {100 * result['final_accuracy']['correct']:.1f}%")
    over = result["base_accuracy_over_seeds"]
    seeds = [row["seed"] for row in over["per_seed"]]
    per_seed = ", ".join(f"{100 * row['correct']:.1f}" for row in over["per_seed"])
    print(
        f"base stage over sampling seeds {seeds}: mean {100 * over['mean']:.1f}% correct (per seed {per_seed}; "
        f"color {_percent(over['mean_color'])}, shape {_percent(over['mean_shape'])}); strict (every stated "
        f"attribute, background included) {_percent(over['mean_strict'])}, background "
        f"{_percent(over['mean_background'])}, right count {_percent(over['mean_count'])}"
    )
    if heldout:
        held = result["heldout_accuracy_over_seeds"]
        print(
            f"held-out prompts (size, position, background), base stage over {len(held['per_seed'])} seeds: "
            f"color + shape {100 * held['mean']:.1f}%, strict {_percent(held['mean_strict'])}, background "
            f"{_percent(held['mean_background'])}, size {_percent(held['mean_size'])}, position "
            f"{_percent(held['mean_position'])}"
        )
    if two:
        print(f"two-object prompts (base stage): {100 * result['two_object_accuracy']['correct']:.1f}% correct")
    print(sweep_table(result["guidance_sweep"]))
    print(fidelity_table(result["sr_fidelity"]))
    total = sum(seconds.values())
    print("time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()) + f"; total {total / 60:.1f} min")
    print(f"samples: {samples}/grid.png, cascade.png; results: {workdir}/eval.json")
    return result
