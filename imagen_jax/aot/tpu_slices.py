"""TPU slices by name, their chips, and the compile-only devices libtpu gives for them.

Cloud TPU names count differently per generation: `v4-N` and `v5p-N` count TensorCores
(two per chip, fused into one JAX device by megacore), so v4-256 is 128 chips; `v5e-N`
(also `v5litepod-N`) and `v6e-N` count chips. An explicit physical topology
`GEN:AxBxC` (v4, v5p) or `GEN:AxB` (v5e, v6e) is accepted too, e.g. `v4:4x4x8`.

Per-chip figures (design.md §6 and Cloud TPU documentation): peak dense bf16 FLOP/s, HBM
capacity and HBM bandwidth, used for "does it fit" and for a roofline step-time estimate.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

from imagen_jax.train.hardware import CHIP_PEAK_TFLOPS

GIB = 1024**3


class MissingLibtpuError(ModuleNotFoundError):
    """libtpu (the TPU compiler) is not installed."""


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU chip generation: `prefix` is libtpu's topology prefix; megacore means one
    JAX device per chip spanning its two TensorCores (v4, v5p)."""

    generation: str
    prefix: str
    peak_tflops: float  # dense bf16 per chip
    hbm_bytes: int
    hbm_gbytes_per_s: float
    megacore: bool
    dims: int  # 3-D torus (v4, v5p) or 2-D (v5e, v6e)


CHIPS = {
    "v4": Chip("v4", "v4", CHIP_PEAK_TFLOPS["v4"], 32 * GIB, 1228.0, megacore=True, dims=3),
    "v5p": Chip("v5p", "v5", CHIP_PEAK_TFLOPS["v5p"], 95 * GIB, 2765.0, megacore=True, dims=3),
    "v5e": Chip("v5e", "v5e", CHIP_PEAK_TFLOPS["v5e"], 16 * GIB, 819.0, megacore=False, dims=2),
    "v6e": Chip("v6e", "v6e", CHIP_PEAK_TFLOPS["v6e"], 32 * GIB, 1640.0, megacore=False, dims=2),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v5": "v5p", "v6lite": "v6e"}

# Slice name size -> physical chip grid (Cloud TPU's standard slice shapes).
_3D_SHAPES = {
    8: (2, 2, 1),
    16: (2, 2, 2),
    32: (2, 2, 4),
    64: (2, 4, 4),
    128: (4, 4, 4),
    256: (4, 4, 8),
    384: (4, 4, 12),
    512: (4, 8, 8),
    1024: (8, 8, 8),
    1536: (8, 8, 12),
    2048: (8, 8, 16),
    4096: (8, 16, 16),
    8192: (16, 16, 16),
}  # keyed by TensorCores (2 per chip)
_2D_SHAPES = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}


@dataclasses.dataclass(frozen=True)
class TpuSlice:
    """A slice: `name` as given, `topology` libtpu's string (e.g. "v4:4x4x8"), the chip grid."""

    name: str
    chip: Chip
    grid: tuple[int, ...]

    @property
    def chips(self) -> int:
        return math.prod(self.grid)

    @property
    def topology(self) -> str:
        return f"{self.chip.prefix}:{'x'.join(map(str, self.grid))}"

    @property
    def wrap(self) -> tuple[bool, bool, bool]:
        """Torus wrap-around per axis: full 4-chip cubes wrap (3-D); 16-chip rows wrap (2-D)."""
        if self.chip.dims == 3:
            full_cubes = all(d % 4 == 0 for d in self.grid)
            return (full_cubes,) * 3
        return tuple(d == 16 for d in self.grid) + (False,)

    def topology_options(self) -> dict:
        """Keyword arguments of jax.experimental.topologies.get_topology_desc."""
        return {
            "topology_name": self.topology,
            "platform": "tpu",
            "chip_config_name": "megacore" if self.chip.megacore else "default",
            "chips_per_host_bounds": (2, 2, 1),
            "wrap": self.wrap,
        }


def slice_names() -> list[str]:
    """Every named slice accepted (besides explicit GEN:AxBxC topologies)."""
    names = [f"{gen}-{n}" for gen in ("v4", "v5p") for n in _3D_SHAPES]
    names += [f"{gen}-{n}" for gen in ("v5e", "v6e") for n in _2D_SHAPES]
    return names


def _unknown(name: str) -> ValueError:
    return ValueError(
        f"unknown TPU topology {name!r}; use a slice name ({', '.join(slice_names())}; v5litepod-N = v5e-N) "
        "or an explicit physical topology such as v4:4x4x8, v5p:4x4x4, v5e:16x16, v6e:8x16"
    )


def parse_slice(name: str) -> TpuSlice:
    """'v4-256' | 'v5p-128' | 'v5e-256' | 'v5litepod-64' | 'v6e-256' | 'v4:4x4x8' | ... -> TpuSlice."""
    text = name.strip().lower()
    explicit = re.fullmatch(r"([a-z0-9]+):(\d+(?:x\d+)+)", text)
    named = re.fullmatch(r"([a-z0-9]+)-(\d+)", text)
    if explicit:
        gen, grid = explicit.group(1), tuple(int(d) for d in explicit.group(2).split("x"))
    elif named:
        gen, size = named.group(1), int(named.group(2))
    else:
        raise _unknown(name)
    gen = _ALIASES.get(gen, gen)
    if gen not in CHIPS:
        raise _unknown(name)
    chip = CHIPS[gen]
    if explicit:
        if chip.dims == 2 and len(grid) == 3 and grid[2] == 1:
            grid = grid[:2]
        if len(grid) != chip.dims or min(grid) < 1:
            raise _unknown(name)
        return TpuSlice(name, chip, grid)
    shapes = _3D_SHAPES if chip.dims == 3 else _2D_SHAPES
    if size not in shapes:
        raise _unknown(name)
    return TpuSlice(name, chip, shapes[size])


def topology_devices(tpu_slice: TpuSlice) -> list:
    """The slice's compile-only jax devices (one per chip), from libtpu on any machine."""
    try:
        import libtpu  # noqa: F401
    except ImportError:
        raise MissingLibtpuError(
            "compiling for a TPU topology needs libtpu; install it with: pip install 'imagen-jax[tpu-aot]'"
        ) from None
    from jax.experimental import topologies

    # libtpu's lockfile guards a real TPU against two processes; compile-only devices touch no
    # hardware, so several compile checks (and a training run on this host) may load it at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    devices = topologies.get_topology_desc(**tpu_slice.topology_options()).devices
    if len(devices) != tpu_slice.chips:
        raise RuntimeError(f"libtpu gave {len(devices)} devices for {tpu_slice.topology}, expected {tpu_slice.chips}")
    return list(devices)
