"""A sampling batch split over the devices of every process: which rows of the global batch
this process holds, building a global array from them, and reading them back.

The global batch of B rows is split over the mesh's (data, fsdp) devices; each process
prepares (encodes, writes) only the rows its own devices hold, so the prompt list is split
across hosts without any host seeing another's arrays. The rows a process holds follow from
the sharding, not from an assumed device order.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def rows_sharding(mesh: Mesh, batch: int) -> NamedSharding:
    """Rows split over all of the mesh's (data, fsdp) devices when `batch` divides evenly;
    else (one process only) replicated: every device computes the whole batch."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch % shards == 0:
        return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
    if jax.process_count() > 1:
        raise ValueError(
            f"batch_size={batch} must be a multiple of the {shards} devices sampling together "
            f"(mesh data x fsdp over {jax.process_count()} processes); "
            f"pass --batch-size {shards * -(-batch // shards)}."
        )
    return NamedSharding(mesh, PartitionSpec())


def host_rows(sharding: NamedSharding, batch: int) -> np.ndarray:
    """The global rows (sorted int array) that this process's devices hold."""
    rows = set()
    for index in sharding.addressable_devices_indices_map((batch,)).values():
        rows.update(range(batch)[index[0]])
    return np.asarray(sorted(rows), dtype=np.int64)


def to_global(local: np.ndarray, rows: np.ndarray, sharding: NamedSharding, batch: int) -> jax.Array:
    """A global [batch, ...] array from this process's rows (`local[k]` is global row
    `rows[k]`); each device gets its slice from its own process's data."""
    position = {int(r): k for k, r in enumerate(rows)}

    def piece(index):
        wanted = range(batch)[index[0]]
        return local[[position[r] for r in wanted]]

    return jax.make_array_from_callback((batch,) + local.shape[1:], sharding, piece)


def local_rows(array: jax.Array, rows: np.ndarray) -> np.ndarray:
    """This process's `rows` of a global array [batch, ...] as a host array, read from the
    shards its devices hold (whatever the array's sharding)."""
    out = np.empty((len(rows),) + array.shape[1:], array.dtype)
    filled = np.zeros(len(rows), bool)
    position = {int(r): k for k, r in enumerate(rows)}
    for shard in array.addressable_shards:
        data = None
        for offset, r in enumerate(range(array.shape[0])[shard.index[0]]):
            k = position.get(r)
            if k is not None and not filled[k]:
                data = np.asarray(shard.data) if data is None else data
                out[k], filled[k] = data[offset], True
    if not filled.all():
        raise RuntimeError(f"rows {rows[~filled].tolist()} are not on this process's devices")
    return out
