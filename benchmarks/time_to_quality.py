"""Time to quality, side by side with imagen-pytorch 2.1.0: both trained for the SAME wall time
on the same machine, one after the other in one run, on the demo's shapes data at the demo
base stage's resolution (32 px) with the same text embeddings, and scored by the same
evaluator on the demo's 30 prompts over the same seeds.

    bash benchmarks/peers/setup_imagen_pytorch.sh        # once: the peer's venv (~/.cache/imagen-peer)
    python benchmarks/time_to_quality.py --peer-python ~/.cache/imagen-peer/venv/bin/python \
        [--workdir runs/time_to_quality] [--base-steps N] [--seeds 4] [--curve-seeds 2] \
        [--out benchmarks/results/time_to_quality_cpu2.json]

1. Data (not timed): the demo's dataset and caption cache (made on first use), exported once
   for the peer: the base stage's own prepared images (32 px, [-1, 1]) with their cached text
   embeddings and masks (the demo's encoder, 24 tokens), and the prompts' embeddings.
2. Ours: the demo's base stage (configs/demo.py: 2 x 2 pixel blocks, 1.63M params, eps with
   min-SNR 5, batch 8) trained for --base-steps (default the demo's train.steps), checkpoints at 25 /
   50 / 75 / 100% of the steps. Its wall time, process set-up and XLA compile included, is the
   budget B.
3. Theirs (benchmarks/peers/imagen_pytorch_time_to_quality.py, in the peer's venv): a Unet of
   about the same size (dim 32, dim_mults (1, 2, 2), attention at the two lower levels, 4 heads
   of 16: 1.65M params) and imagen-pytorch's defaults for the rest (eps with min-SNR 5,
   ImagenTrainer's Adam 1e-4 and EMA), batch 8, trained for B seconds from its process start,
   checkpoints at 25 / 50 / 75 / 100% of B.
4. Scores (imagen_jax.eval.prompt_accuracy): color + shape ("correct") and strict (every stated
   attribute), at each checkpoint (--curve-seeds seeds; the last over --seeds), each side with
   its default sampler at guidance 5 (ours: DPM-Solver++(2M), 32 steps, dynamic thresholding,
   guidance at log-SNR <= 2; theirs: ancestral, 1000 steps, dynamic thresholding at 0.95);
   then sampler step counts swept on the last checkpoint (--seeds seeds): seconds per image
   (after compilation; ours' compile is reported apart) and the fewest steps within 2 points
   of each side's best accuracy.
Prints a table and writes the JSON (every setting, per-seed figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from results_io import RESULTS_DIR, write_results

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
PEER_SCRIPT = BENCHMARKS / "peers" / "imagen_pytorch_time_to_quality.py"
SETUP_SCRIPT = "benchmarks/peers/setup_imagen_pytorch.sh"
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
RATES = ("correct", "strict", "color", "shape", "background", "count")
GUIDANCE = 5.0
WITHIN = 0.02  # "within 2 points of its best accuracy"
PEER_DEFAULT_STEPS = 1000  # imagen-pytorch's Imagen(timesteps=1000): its sampler's step count

# The peer's Unet: our base stage's width (32), multipliers (1, 2, 2), res blocks per level (1),
# heads of 16; imagen-pytorch's defaults for everything else. 1.65M parameters against our 1.63M.
PEER_ARCH = dict(
    image_size=32,
    dim=32,
    dim_mults=[1, 2, 2],
    num_resnet_blocks=1,
    attention_levels=2,
    attn_heads=4,
    attn_dim_head=16,
    batch=8,
    seed=0,
    threads=2,
)


def demo_base_config(steps: int | None):
    """configs/demo.py's base stage; `steps` replaces train.steps (checkpoints at each quarter)."""
    from imagen_jax.config import load_config

    config = load_config(str(REPO / "configs" / "demo.py"))
    base = config.base
    if steps is not None:
        if steps % 4:
            raise SystemExit(f"--base-steps {steps} must be a multiple of 4 (a checkpoint at each quarter).")
        base.train.steps = steps
        base.checkpoint.every = base.train.sample_every = steps // 4
    if base.train.steps % 4 or base.checkpoint.every != base.train.steps // 4:
        raise SystemExit("the base config must checkpoint at each quarter of train.steps")
    base.checkpoint.keep = len(FRACTIONS)  # the demo keeps 3; the curve scores all four
    return config, base


def export_for_peer(base, prompts: list[str], workdir: Path) -> tuple[Path, Path]:
    """The base stage's prepared training examples (one epoch, record order) with their cached
    text embeddings, and the prompts' embeddings, as .npz files for the peer (made once)."""
    from imagen_jax.data.pipeline import dataset_from_config
    from imagen_jax.parallel.mesh import make_mesh
    from imagen_jax.parallel.rules import rules_from_config
    from imagen_jax.text.embedding_cache import EmbeddingCacheSource
    from imagen_jax.text.encoder import load_text_encoder
    from imagen_jax.train.inputs import prepare_data

    data_path, prompts_path = workdir / "peer_data.npz", workdir / "peer_prompts.npz"
    if not data_path.exists():
        mesh = make_mesh(base.mesh.data, base.mesh.fsdp)
        cache_dir = prepare_data(base, mesh, rules_from_config(base.mesh.get("rules", None)))
        one_epoch = base.copy_and_resolve_references()
        one_epoch.data.shuffle, one_epoch.data.num_epochs = False, 1
        parts = {"images": [], "text_embeddings": [], "text_masks": []}
        for batch in dataset_from_config(one_epoch, batch_size=100, text_embeddings=EmbeddingCacheSource(cache_dir)):
            parts["images"].append(np.asarray(batch["image"], np.float16))
            parts["text_embeddings"].append(np.asarray(batch["text_embedding"], np.float16))
            parts["text_masks"].append(np.asarray(batch["text_mask"], bool))
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        np.savez(workdir / "peer_data.tmp.npz", **arrays)
        os.replace(workdir / "peer_data.tmp.npz", data_path)
        print(f"exported {len(arrays['images'])} training examples for the peer: {data_path}", file=sys.stderr)
    encoder = load_text_encoder(base.text.encoder, max_length=base.data.max_text_length)
    embedding, mask = encoder.encode(prompts)
    np.savez(prompts_path, text_embeddings=np.asarray(embedding, np.float32), text_masks=np.asarray(mask, bool))
    return data_path, prompts_path


def score(images_per_seed, prompts: list[str], seeds) -> dict:
    """Prompt accuracy per seed ([seeds, N, S, S, 3] uint8) and the means of RATES."""
    from imagen_jax.eval import prompt_accuracy

    per_seed = []
    for seed, images in zip(seeds, images_per_seed):
        result = prompt_accuracy(np.asarray(images), prompts)
        per_seed.append({"seed": int(seed), **{k: result[k] for k in RATES}})
    means = {}
    for k in RATES:
        values = [row[k] for row in per_seed if row[k] is not None]
        means[k] = float(np.mean(values)) if values else None
    return {**means, "per_seed": per_seed}


def train_ours(base, workdir: Path) -> dict:
    """Train our base stage; its wall time and the seconds at which each checkpoint was written."""
    from imagen_jax.train.loop import train

    started_wall, start = time.time(), time.perf_counter()
    train(base, str(workdir), progress=False)
    seconds = time.perf_counter() - start
    every = base.checkpoint.every
    checkpoints = []
    for quarter, fraction in enumerate(FRACTIONS, start=1):
        step = every * quarter
        saved = (workdir / "checkpoints" / str(step)).stat().st_mtime - started_wall
        checkpoints.append(
            {"fraction": fraction, "step": step, "images": step * base.train.batch_size, "seconds": saved}
        )
    return {"seconds": seconds, "checkpoints": checkpoints}


def sample_ours(workdir: Path, step: int, prompts: list[str], seeds, num_steps: int | None = None) -> dict:
    """Our stage at checkpoint `step` on `prompts` for each seed: scores and seconds per image
    (the first call's compile apart)."""
    import jax

    from imagen_jax.images import to_uint8
    from imagen_jax.pipeline import Cascade

    overrides = [[f"sampling.num_steps={num_steps}"]] if num_steps else None
    cascade = Cascade.from_workdirs([str(workdir)], steps=[step], config_overrides=overrides)
    embedding, mask = cascade.encode(prompts)
    images, seconds = [], []
    for seed in [seeds[0], *seeds]:  # the first call compiles: run it once more, timed
        start = time.perf_counter()
        out = cascade.run_stage_batched(0, embedding, mask, jax.random.key(seed), batch_size=len(prompts))
        seconds.append(time.perf_counter() - start)
        images.append(to_uint8(out))
    steps = num_steps or cascade.stages[0].sampler.num_steps
    return {
        "num_steps": steps,
        "compile_seconds": seconds[0] - seconds[1],
        "seconds_per_image": float(np.mean(seconds[1:])) / len(prompts),
        **score(images[1:], prompts, seeds),
    }


def run_peer(peer_python: str, *args: str) -> None:
    command = [peer_python, str(PEER_SCRIPT), *args]
    print("$ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)


def sample_peer(peer_python, arch_path, checkpoint, prompts_path, prompts, seeds, timesteps, workdir) -> dict:
    out = workdir / f"peer_images_{Path(checkpoint).stem}_{timesteps}.npz"
    if not out.exists():
        run_peer(
            peer_python,
            "sample",
            "--arch",
            str(arch_path),
            "--checkpoint",
            str(checkpoint),
            "--prompts",
            str(prompts_path),
            "--seeds",
            *map(str, seeds),
            "--cond-scale",
            str(GUIDANCE),
            "--timesteps",
            str(timesteps),
            "--out",
            str(out),
        )
    result = np.load(out)
    return {
        "num_steps": timesteps,
        "seconds_per_image": float(np.mean(result["seconds"])) / len(prompts),
        **score(result["images"], prompts, seeds),
    }


def peer_default_time(sweep: list[dict]) -> dict:
    """The peer's seconds per image at its default 1000 steps: measured if the sweep has it, else
    scaled from the most steps measured (every ancestral step is the same two Unet calls)."""
    row = max(sweep, key=lambda r: r["num_steps"])
    seconds = row["seconds_per_image"] * PEER_DEFAULT_STEPS / row["num_steps"]
    return {"peer": seconds, "peer_measured_at_steps": row["num_steps"]}


def fewest_steps_within(sweep: list[dict]) -> dict:
    """The sweep row with the fewest steps whose accuracy is within WITHIN of the best."""
    best = max(row["correct"] for row in sweep)
    return min((row for row in sweep if row["correct"] >= best - WITHIN - 1e-9), key=lambda r: r["num_steps"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-python", required=True, help=f"the peer venv's python ({SETUP_SCRIPT} makes it)")
    parser.add_argument("--workdir", default="runs/time_to_quality")
    parser.add_argument(
        "--base-steps", type=int, default=None, help="our base stage's train.steps (default: the demo's)"
    )
    parser.add_argument("--seeds", type=int, default=4, help="sampling seeds for the last checkpoint and the sweeps")
    parser.add_argument("--curve-seeds", type=int, default=2, help="sampling seeds at 25/50/75%% of the budget")
    parser.add_argument("--our-steps", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--peer-steps", type=int, nargs="+", default=[32, 64, 250, 1000])
    parser.add_argument(
        "--peer-eval-steps",
        type=int,
        default=PEER_DEFAULT_STEPS,
        help="steps the peer's checkpoints are scored at (its default 1000: ~27 s per image on 2 cores)",
    )
    parser.add_argument("--out", default=str(RESULTS_DIR / "time_to_quality_cpu2.json"))
    args = parser.parse_args(argv)
    if not Path(args.peer_python).exists():
        raise SystemExit(f"No peer python at {args.peer_python}; run `bash {SETUP_SCRIPT}` first.")

    config, base = demo_base_config(args.base_steps)
    prompts = list(config.eval.prompts)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    data_path, prompts_path = export_for_peer(base, prompts, workdir)
    seeds, curve_seeds = list(range(args.seeds)), list(range(args.curve_seeds))

    print(f"== ours: the demo's base stage, {base.train.steps} steps", file=sys.stderr, flush=True)
    ours_dir = workdir / "ours"
    if (workdir / "ours_training.json").exists():  # a rerun scores again without retraining
        ours = json.loads((workdir / "ours_training.json").read_text())
    else:
        ours = train_ours(base, ours_dir)
        (workdir / "ours_training.json").write_text(json.dumps(ours))
    budget = ours["seconds"]

    print(f"== theirs: imagen-pytorch for the same {budget:.0f} s", file=sys.stderr, flush=True)
    arch = {**PEER_ARCH, "text_dim": base.model.text_dim, "text_len": base.data.max_text_length}
    arch_path = workdir / "peer_arch.json"
    arch_path.write_text(json.dumps(arch))
    peer_dir = workdir / "peer"
    if not (peer_dir / "progress.json").exists():
        run_peer(
            args.peer_python,
            "train",
            "--arch",
            str(arch_path),
            "--data",
            str(data_path),
            "--budget-seconds",
            str(budget),
            "--fractions",
            *map(str, FRACTIONS),
            "--out",
            str(peer_dir),
        )
    peer = json.loads((peer_dir / "progress.json").read_text())

    print("== scoring the checkpoints", file=sys.stderr, flush=True)
    default_ours, default_peer = None, None
    for row in ours["checkpoints"]:
        row.update(sample_ours(ours_dir, row["step"], prompts, seeds if row["fraction"] == 1 else curve_seeds))
        default_ours = row if row["fraction"] == 1 else default_ours
    for row in peer["checkpoints"]:
        last = row["fraction"] == 1
        row.update(
            sample_peer(
                args.peer_python,
                arch_path,
                row["checkpoint"],
                prompts_path,
                prompts,
                seeds if last else curve_seeds,
                args.peer_eval_steps,
                workdir,
            )
        )
        default_peer = row if last else default_peer

    print("== sampler steps on the last checkpoints", file=sys.stderr, flush=True)
    final_step = ours["checkpoints"][-1]["step"]
    ours_sweep = [
        {k: default_ours[k] for k in default_ours if k in ("num_steps", "seconds_per_image", *RATES, "per_seed")}
        if n == default_ours["num_steps"]
        else sample_ours(ours_dir, final_step, prompts, seeds, n)
        for n in sorted(set(args.our_steps) | {default_ours["num_steps"]})
    ]
    peer_sweep = [
        sample_peer(
            args.peer_python, arch_path, peer["checkpoints"][-1]["checkpoint"], prompts_path, prompts, seeds, n, workdir
        )
        for n in sorted(set(args.peer_steps) | {args.peer_eval_steps})
    ]
    ours_fast, peer_fast = fewest_steps_within(ours_sweep), fewest_steps_within(peer_sweep)
    summary = {
        "budget_seconds": budget,
        "accuracy_at_equal_time": {
            "ours": default_ours["correct"],
            "peer": default_peer["correct"],
            "ours_strict": default_ours["strict"],
            "peer_strict": default_peer["strict"],
            "ratio": default_ours["correct"] / default_peer["correct"] if default_peer["correct"] else None,
        },
        "train_images_per_second": {
            "ours": default_ours["images"] / budget,
            "peer": peer["checkpoints"][-1]["images"] / peer["checkpoints"][-1]["seconds"],
        },
        "seconds_per_image_default": {"ours": default_ours["seconds_per_image"], **peer_default_time(peer_sweep)},
        "fewest_steps_within_2_points": {
            "ours": {k: ours_fast[k] for k in ("num_steps", "seconds_per_image", "correct")},
            "peer": {k: peer_fast[k] for k in ("num_steps", "seconds_per_image", "correct")},
            "time_ratio_peer_over_ours": peer_fast["seconds_per_image"] / ours_fast["seconds_per_image"],
        },
    }
    settings = {
        "base_steps": base.train.steps,
        "seeds": seeds,
        "curve_seeds": curve_seeds,
        "guidance": GUIDANCE,
        "prompts": prompts,
        "peer_arch": arch,
        "peer_params": peer["params"],
        "text_encoder": base.text.encoder,
        "dataset": base.data.name,
        "batch": base.train.batch_size,
        "peer_eval_steps": args.peer_eval_steps,
        "our_steps": args.our_steps,
        "peer_steps": args.peer_steps,
    }
    write_results(
        args.out,
        {
            "settings": settings,
            "summary": summary,
            "ours": {**ours, "sweep": ours_sweep},
            "peer": {**peer, "sweep": peer_sweep},
        },
    )
    print_table(ours, peer, ours_sweep, peer_sweep, summary)


def print_table(ours, peer, ours_sweep, peer_sweep, summary) -> None:
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    print(f"\nequal wall time: {summary['budget_seconds'] / 60:.1f} min each")
    print("| budget | ours: step, color+shape, strict | imagen-pytorch: step, color+shape, strict |")
    print("|---|---|---|")
    for a, b in zip(ours["checkpoints"], peer["checkpoints"]):
        print(
            f"| {100 * a['fraction']:.0f}% | {a['step']}, {pct(a['correct'])}, {pct(a['strict'])} | "
            f"{b['step']}, {pct(b['correct'])}, {pct(b['strict'])} |"
        )
    print("\n| sampler steps | ours: s/image, color+shape | imagen-pytorch: s/image, color+shape |")
    print("|---|---|---|")
    rows = max(len(ours_sweep), len(peer_sweep))
    for i in range(rows):
        a = ours_sweep[i] if i < len(ours_sweep) else None
        b = peer_sweep[i] if i < len(peer_sweep) else None
        cell = lambda r: "" if r is None else f"{r['num_steps']}: {r['seconds_per_image']:.4f}, {pct(r['correct'])}"  # noqa: E731
        print(f"| {i} | {cell(a)} | {cell(b)} |")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
