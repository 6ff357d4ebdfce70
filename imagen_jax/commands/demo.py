"""`imagen-jax demo`: train the built-in shapes cascade on this machine, sample it and
evaluate it (imagen_jax/demo.py; docs/demo.md)."""

from __future__ import annotations

import argparse
import logging
import os

from imagen_jax import demo
from imagen_jax.cli import log_to_stderr
from imagen_jax.demo import DEFAULT_CONFIG, run_demo


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a small shapes cascade (32 -> 64 px) on this machine, sample it and evaluate it",
        description=demo.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--workdir", default="runs/demo", help="where the stages, samples and eval.json go (default runs/demo)"
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help="demo config (default: the repository's configs/demo.py)"
    )
    parser.add_argument("--override", action="store_true", help="continue stage workdirs whose saved config differs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run, accepts_config_overrides=True)


def run(args) -> int:
    from imagen_jax.config import apply_overrides, load_config

    log_to_stderr(logging.WARNING)
    if not os.path.exists(args.config.split(":")[0]):
        raise FileNotFoundError(
            f"no demo config {args.config!r}; pass --config path/to/configs/demo.py (in a clone "
            "of the repository; a wheel install does not carry configs/)."
        )
    config = apply_overrides(load_config(args.config), args.config_overrides)
    run_demo(config, args.workdir, override=args.override, progress=not args.no_progress)
    return 0
