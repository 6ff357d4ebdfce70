"""The device mesh: named axes (data, fsdp) over all devices of all processes (design.md §7).

`data` replicates parameters and splits the batch; `fsdp` splits the batch AND shards
parameters and optimizer state (ZeRO-3 style), so a model too large for one chip fits.
"""

from __future__ import annotations

import jax
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp")


def make_mesh(data: int = -1, fsdp: int = 1, devices=None) -> Mesh:
    """A 2-D Mesh ('data', 'fsdp') over `devices` (default: every device of every process).

    One of `data` / `fsdp` may be -1: it takes all the devices the other leaves.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1 and fsdp == -1:
        raise ValueError("mesh: at most one of data and fsdp may be -1")
    if data == -1:
        data = n // fsdp if fsdp > 0 and n % fsdp == 0 else 0
    elif fsdp == -1:
        fsdp = n // data if data > 0 and n % data == 0 else 0
    if data < 1 or fsdp < 1 or data * fsdp != n:
        raise ValueError(
            f"mesh: data={data} x fsdp={fsdp} does not cover the {n} devices; set "
            f"--config.mesh.data and --config.mesh.fsdp so that data * fsdp == {n} (or one of them to -1)"
        )
    return jax.make_mesh((data, fsdp), MESH_AXES, axis_types=(AxisType.Auto,) * 2, devices=devices)


def batch_axis_size(mesh: Mesh) -> int:
    """How many ways the global batch is split: data * fsdp."""
    return mesh.shape["data"] * mesh.shape["fsdp"]
