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
    parser.add_argument(
        "--status-file",
        help="when the command ends, write one line here: 'finished' (trained to train.steps), 'preempted' "
        "(stopped by SIGTERM after saving; run again to resume) or 'failed: REASON' "
        "(launch/tpu_train.sh --restart reads it)",
    )
    parser.set_defaults(run=run, accepts_config_overrides=True)


def run(args) -> int:
    from imagen_jax.config import apply_overrides, load_config
    from imagen_jax.train.loop import train
    from imagen_jax.train.metrics import finished_step

    log_to_stderr(logging.INFO)
    try:
        config = apply_overrides(load_config(args.config), args.config_overrides)
        metrics = train(
            config,
            args.workdir,
            override=args.override,
            progress=not args.no_progress,
            checkpoint_fallback=not args.no_checkpoint_fallback,
        )
        outcome = "finished" if finished_step(args.workdir) >= config.train.steps else "preempted"
    except BaseException as error:
        _write_status(args.status_file, f"failed: {type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}")
        raise
    _write_status(args.status_file, outcome)
    if metrics:
        print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return 0


def _write_status(path: str | None, line: str) -> None:
    if path:
        from imagen_jax import storage

        storage.path(path).write_text(line + "\n")
