"""Ahead-of-time compilation for TPU slices from any machine: will a config fit, how fast."""

from imagen_jax.aot.compile_check import CompileReport, compile_check
from imagen_jax.aot.tpu_slices import (
    CHIPS,
    MissingLibtpuError,
    TpuSlice,
    parse_slice,
    slice_names,
    topology_devices,
)

__all__ = [
    "CHIPS",
    "CompileReport",
    "MissingLibtpuError",
    "TpuSlice",
    "compile_check",
    "parse_slice",
    "slice_names",
    "topology_devices",
]
