"""Deal a global element stream to hosts in whole per-host blocks of a global batch.

Element stream e_0, e_1, ... is cut into global batches of `block * count` elements;
host p takes the p-th block of `block` consecutive elements of each. Concatenating the
hosts' batches in process order (what jax.make_array_from_process_local_data does over
a mesh ordered by process) gives back the global batch in stream order, so a run sees
the same global batches, in the same order, on 1 host or on 64.
"""

from __future__ import annotations

from typing import Any, Sequence

import grain


class HostBlocksMapDataset(grain.MapDataset):
    """parent[(i // block) * block * count + index * block + i % block] for host `index` of `count`."""

    _MUTATES_ELEMENT_SPEC = False

    def __init__(self, parent: grain.MapDataset, *, block: int, index: int, count: int):
        super().__init__(parent)
        if block < 1 or not 0 <= index < count:
            raise ValueError(f"need block >= 1 and 0 <= index < count, got block={block}, index={index}, count={count}")
        self._block, self._index, self._count = block, index, count
        self._length = (len(parent) // (block * count)) * block

    def __len__(self) -> int:
        return self._length

    def _parent_index(self, index: int) -> int:
        group, offset = divmod(index, self._block)
        return group * self._block * self._count + self._index * self._block + offset

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        with self._stats.record_self_time():
            parent_index = self._parent_index(index)
        return self._parent[parent_index]

    def _getitems(self, indices: Sequence[int]):
        with self._stats.record_self_time(num_elements=len(indices)):
            parent_indices = [self._parent_index(i) for i in indices]
        return self._parent._getitems(parent_indices)  # pylint: disable=protected-access

    def __str__(self) -> str:
        return f"HostBlocksMapDataset(block={self._block}, index={self._index}, count={self._count})"

    @property
    def _element_spec(self) -> Any:
        return grain.experimental.get_element_spec(self._parent)
