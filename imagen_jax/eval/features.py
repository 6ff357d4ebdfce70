"""Network features of many images, sharded over every device of every host, streamed.

A global batch of `batch_size` items (a multiple of the device count) is split over the
mesh's batch axes; with several processes each loads only its block of rows (the order of
jax.make_array_from_process_local_data), and every process receives all features. The
last batch is padded by repeating its last item; the padding's features are dropped.
Loading (files, local or gs://) runs in threads, one batch ahead of the devices.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from imagen_jax.parallel.mesh import batch_axis_size, make_mesh

READ_THREADS = 16


class ShardedFeatures:
    """`feature_fn(params, batch [B, ...]) -> [B, D]` compiled once over `mesh` (default: all
    devices on the batch axis), params replicated."""

    def __init__(self, feature_fn: Callable, params, *, batch_size: int, mesh=None):
        self.mesh = make_mesh(data=-1) if mesh is None else mesh
        ways = batch_axis_size(self.mesh)
        self.batch_size = -(-batch_size // ways) * ways  # rounded up to the device count
        self._replicated = NamedSharding(self.mesh, PartitionSpec())
        self._batch = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names))
        self._params = jax.device_put(params, self._replicated)
        self._fn = jax.jit(feature_fn, out_shardings=self._replicated)

    def _local_rows(self) -> slice:
        count, index = jax.process_count(), jax.process_index()
        block = self.batch_size // count
        return slice(index * block, (index + 1) * block)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Features of one global batch (every process passes the whole batch; each uploads
        only its rows): [batch_size, ...] -> float32 [batch_size, D] on every process."""
        local = np.asarray(batch)[self._local_rows()]
        array = jax.make_array_from_process_local_data(self._batch, local, (self.batch_size, *local.shape[1:]))
        out = self._fn(self._params, array)
        return np.asarray(out.addressable_data(0))

    def stream(
        self,
        items: Sequence,
        load: Callable[[object], np.ndarray],
        *,
        description: str = "features",
        progress: bool = True,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(first index, features [n, D]) per global batch of `items`, in order; `load(item)`
        gives one example (e.g. a uint8 image [H, W, 3] from a path). Each process loads
        only the items of its rows."""
        rows = self._local_rows()
        starts = range(0, len(items), self.batch_size)

        def load_batch(start: int) -> np.ndarray:
            indices = [min(start + r, len(items) - 1) for r in range(rows.start, rows.stop)]
            examples = list(pool.map(lambda i: load(items[i]), indices))
            shapes = {e.shape for e in examples}
            if len(shapes) > 1:
                raise ValueError(
                    f"Images of different sizes {sorted(shapes)} in one batch (items {start}..); "
                    "resize them to one size first (the model's samples all have one)."
                )
            local = np.stack(examples)
            full = np.zeros((self.batch_size, *local.shape[1:]), local.dtype)
            full[rows] = local
            return full

        bar = tqdm(total=len(items), desc=description, unit="img", disable=not progress or jax.process_index() != 0)
        with concurrent.futures.ThreadPoolExecutor(READ_THREADS) as pool, bar:
            with concurrent.futures.ThreadPoolExecutor(1) as ahead:
                pending = ahead.submit(load_batch, starts[0]) if starts else None
                for k, start in enumerate(starts):
                    batch = pending.result()
                    if k + 1 < len(starts):
                        pending = ahead.submit(load_batch, starts[k + 1])
                    n = min(self.batch_size, len(items) - start)
                    yield start, self(batch)[:n]
                    bar.update(n)


def all_features(sharded: ShardedFeatures, items: Sequence, load: Callable, **options) -> np.ndarray:
    """Every item's features [len(items), D], in order."""
    parts = [features for _, features in sharded.stream(items, load, **options)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
