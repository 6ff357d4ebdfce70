"""Shared by the benchmark scripts: the machine a figure was taken on, and writing results."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    """Backend, device kind and count, CPU count, processor and library versions."""
    import jax

    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "jax": jax.__version__,
    }


def write_results(path, payload: dict) -> Path:
    """Write payload plus {"environment": ...} as JSON to `path` (folders created); prints where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=1))
    print(f"wrote {path}")
    return path
