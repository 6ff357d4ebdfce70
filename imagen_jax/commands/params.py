"""Parameter count per preset, by jax.eval_shape (no memory), against the paper (design.md §1).

    imagen-jax params [--config configs/base64_2b.py ...]
    python -m imagen_jax.commands.params [--config ...]

Without --config every preset in the repository's configs/ with a `model` section is listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imagen_jax.config import load_config

# Parameter counts the paper states for its stages (design.md §1), keyed by preset file name.
PAPER_PARAMS = {"base64_2b": 2.0e9, "sr256_600m": 600e6, "sr1024_400m": 400e6}
DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def param_table(paths) -> list[dict]:
    """One row per config: preset, family, resolution, params, paper_params, relative difference."""
    from imagen_jax.models.builder import count_params

    rows = []
    for path in paths:
        config = load_config(path)
        if "model" not in config:
            continue
        preset = Path(path).stem
        count = count_params(config)
        paper = PAPER_PARAMS.get(preset)
        rows.append(
            dict(
                preset=preset,
                family=config.model.family,
                resolution=config.resolution,
                params=count,
                paper_params=paper,
                relative_difference=None if paper is None else count / paper - 1.0,
            )
        )
    return rows


def format_table(rows) -> str:
    lines = [f"{'preset':<16} {'family':<15} {'res':>5} {'params':>14} {'paper':>8} {'diff':>7}", "-" * 70]
    for r in rows:
        paper = "" if r["paper_params"] is None else f"{r['paper_params'] / 1e6:.0f}M"
        diff = "" if r["relative_difference"] is None else f"{100 * r['relative_difference']:+.1f}%"
        lines.append(
            f"{r['preset']:<16} {r['family']:<15} {r['resolution']:>5} {r['params']:>14,} {paper:>8} {diff:>7}"
        )
    return "\n".join(lines)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "params", help="print the parameter count of model presets (jax.eval_shape, no memory)"
    )
    _add_arguments(parser)
    parser.set_defaults(run=run)


def _add_arguments(parser) -> None:
    parser.add_argument("--config", action="append", help="config file (repeatable); default: every preset in configs/")
    parser.add_argument("--json", help="also write the table to this JSON file")


def run(args) -> int:
    paths = args.config or sorted(
        str(p)
        for p in DEFAULT_CONFIG_DIR.glob("*.py")
        if not p.name.startswith("_") and "def get_config" in p.read_text()
    )
    if not paths:
        print(f"no config files found in {DEFAULT_CONFIG_DIR}; pass --config", file=sys.stderr)
        return 1
    rows = param_table(paths)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
