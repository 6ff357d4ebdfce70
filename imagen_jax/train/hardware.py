"""Peak dense bf16 FLOP/s per chip (design.md §6), for MFU = achieved model FLOP/s / peak."""

from __future__ import annotations

# The one table of peaks (aot/tpu_slices.py's chips read theirs here).
CHIP_PEAK_TFLOPS = {"v4": 275.0, "v5p": 459.0, "v5e": 197.0, "v6e": 918.0, "H100": 990.0, "H200": 990.0}

# jax.Device.device_kind -> chip, matched most specific first.
_DEVICE_KINDS = (
    ("TPU v6 lite", "v6e"),
    ("TPU v6e", "v6e"),
    ("TPU v5p", "v5p"),
    ("TPU v5 lite", "v5e"),
    ("TPU v5e", "v5e"),
    ("TPU v5", "v5p"),  # v5p reports itself as "TPU v5"
    ("TPU v4", "v4"),
    ("H200", "H200"),
    ("H100", "H100"),
)


def peak_tflops(device_kind: str) -> float | None:
    """The chip's peak bf16 TFLOP/s, or None when unknown (e.g. CPU): no MFU is reported then."""
    for name, chip in _DEVICE_KINDS:
        if name.lower() in device_kind.lower():
            return CHIP_PEAK_TFLOPS[chip]
    return None
