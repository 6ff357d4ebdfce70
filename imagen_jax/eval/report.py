"""Evaluation results as a printed table and as strict JSON."""

from __future__ import annotations

import json
import math

from imagen_jax import storage

_RATE_ORDER = (
    "correct", "strict", "color", "shape", "object", "one_object", "two_object", "first_object",
    "second_object", "background", "size", "position", "relation", "count",
)  # fmt: skip


def accuracy_table(result: dict) -> str:
    """prompt_accuracy(...) -> aligned text table of its rates."""
    lines = [
        f"prompt accuracy: {result['num_images']} images, {result['num_objects']} objects "
        f"({result['num_two_object']} two-object prompts)"
    ]
    for name in _RATE_ORDER:
        value = result.get(name)
        lines.append(f"  {name:<14} {'n/a' if value is None else f'{100 * value:6.1f}%':>7}")
    return "\n".join(lines)


def fidelity_table(result: dict) -> str:
    """sr_fidelity(...) -> aligned text table, SR beside bicubic."""
    (h, w), (H, W) = result["low_res"], result["high_res"]
    lines = [f"SR fidelity: {result['num_images']} images, {h}x{w} -> {H}x{W}", f"  {'':<8} {'PSNR dB':>8} {'SSIM':>7}"]
    for name in ("sr", "bicubic"):
        lines.append(f"  {name:<8} {result[name]['psnr']:8.2f} {result[name]['ssim']:7.4f}")
    lines.append(f"  {'gain':<8} {result['psnr_gain_db']:8.2f} {result['ssim_gain']:7.4f}")
    return "\n".join(lines)


def _finite(value):
    """inf / nan -> "inf" / "-inf" / "nan" strings, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(result: dict, path: str) -> None:
    """Writes `result` as standard JSON (non-finite floats as strings)."""
    storage.write_text(path, json.dumps(_finite(result), indent=2, allow_nan=False) + "\n")
