"""Peak dense bf16 FLOP/s per chip (design.md §6), for MFU = achieved model FLOP/s / peak."""

from __future__ import annotations

# Matched against jax.Device.device_kind, most specific first.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("TPU v6 lite", 918.0),  # v6e
    ("TPU v6e", 918.0),
    ("TPU v5p", 459.0),
    ("TPU v5 lite", 197.0),  # v5e
    ("TPU v5e", 197.0),
    ("TPU v5", 459.0),  # v5p reports itself as "TPU v5"
    ("TPU v4", 275.0),
    ("H200", 990.0),
    ("H100", 990.0),
)


def peak_tflops(device_kind: str) -> float | None:
    """The chip's peak bf16 TFLOP/s, or None when unknown (e.g. CPU): no MFU is reported then."""
    for name, peak in PEAK_TFLOPS:
        if name.lower() in device_kind.lower():
            return peak
    return None
