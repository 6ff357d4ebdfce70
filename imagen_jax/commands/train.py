"""`imagen-jax train --config configs/X.py --workdir DIR [--config.key=value ...] [--override]`."""

from __future__ import annotations

import argparse
import logging

from imagen_jax.cli import log_to_stderr


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one cascade stage (resumes from the workdir's latest checkpoint)",
        description=__doc__ + "\nAny --config.a.b=VALUE overrides that config field (typed like the field).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="config file, optionally path.py:ARG")
    parser.add_argument(
        "--workdir",
        required=True,
        help="run directory (local or gs://): config.json, checkpoints/, samples/, tensorboard/, metrics.jsonl",
    )
    parser.add_argument(
        "--override", action="store_true", help="continue a workdir whose saved config differs from this one"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    parser.add_argument(
        "--no-checkpoint-fallback",
        action="store_true",
        help="stop when the latest checkpoint does not restore (default: move it aside, resume from the one before)",
    )
    parser.set_defaults(run=run, accepts_config_overrides=True)


def run(args) -> int:
    from imagen_jax.config import apply_overrides, load_config
    from imagen_jax.train.loop import train

    log_to_stderr(logging.INFO)
    config = apply_overrides(load_config(args.config), args.config_overrides)
    metrics = train(
        config,
        args.workdir,
        override=args.override,
        progress=not args.no_progress,
        checkpoint_fallback=not args.no_checkpoint_fallback,
    )
    if metrics:
        print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return 0
