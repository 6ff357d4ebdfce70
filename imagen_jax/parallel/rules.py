"""Logical axis rules: from the names models put on their arrays to mesh axes (DESIGN: Shape).

Models name every parameter dimension (nn.with_logical_partitioning) and their main
activations (nn.with_logical_constraint) with logical names; a rules list maps each name
to a mesh axis, first match wins and a mesh axis is used once per array (flax's priority
semantics). The rules are data: the config's `mesh.rules` can replace these defaults.
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec

# Batch-like activation dims split over both axes; one large dim of each parameter over
# fsdp (the first listed name that the parameter has wins); everything else replicated.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("mlp", "fsdp"),
    ("conv_out", "fsdp"),
    ("heads", "fsdp"),
    ("vocab", "fsdp"),
    ("embed", "fsdp"),
    ("text_embed", "fsdp"),
    ("conv_in", "fsdp"),
    ("kv", None),
    ("norm", None),
    ("relpos", None),
    ("length", None),
    ("height", None),
    ("width", None),
    ("channels", None),
)


def rules_from_config(rules) -> tuple[tuple[str, object], ...]:
    """Normalize a config's list of [name, mesh_axis] pairs (JSON-able) to flax's rule tuples."""
    if rules is None:
        return DEFAULT_RULES
    out = []
    for item in rules:
        name, axis = item
        out.append((str(name), tuple(axis) if isinstance(axis, (list, tuple)) else axis))
    return tuple(out)


def _fits(spec: PartitionSpec, shape, mesh) -> PartitionSpec:
    """Drop a mesh axis from any dimension it does not divide (that dimension stays replicated)."""
    fixed = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if axes is None else (axes if isinstance(axes, tuple) else (axes,))
        size = 1
        for a in names:
            size *= mesh.shape[a]
        fixed.append(axes if dim % size == 0 else None)
    return PartitionSpec(*fixed)


def logical_shardings(abstract_tree, mesh, rules=DEFAULT_RULES):
    """NamedShardings for a pytree of (possibly nn.Partitioned-boxed) arrays or ShapeDtypeStructs.

    Leaves without logical names are replicated; a dimension that its mesh axes do not
    divide is replicated rather than failing to compile.
    """
    specs = nn.get_partition_spec(abstract_tree)
    mesh_specs = nn.logical_to_mesh(specs, rules)
    unboxed = nn.meta.unbox(abstract_tree)

    def one(leaf, spec):
        # Names that do not match the leaf's rank (e.g. Adafactor's factored row/column
        # statistics, which inherit their parameter's box) mean: replicate.
        if not isinstance(spec, PartitionSpec) or len(spec) != len(leaf.shape):
            spec = PartitionSpec()
        return NamedSharding(mesh, _fits(spec, leaf.shape, mesh))

    return jax.tree_util.tree_map(one, unboxed, mesh_specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh, ndim: int) -> NamedSharding:
    """Shard the leading (batch) axis over (data, fsdp); the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))
