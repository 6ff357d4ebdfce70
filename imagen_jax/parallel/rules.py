"""Logical axis rules: from the names models put on their arrays to mesh axes (design.md §7).

Models name every parameter dimension (nn.with_logical_partitioning) and their main
activations (nn.with_logical_constraint) with logical names; a rules list maps each name
to a mesh axis, first match wins and a mesh axis is used once per array (flax's priority
semantics). For parameters, a rule whose mesh axes do not divide its dimension is passed
over, so the axis goes to the next listed name the parameter has (a qkv kernel
[embed, heads, kv] with 8 heads on fsdp 128 is split on embed rather than replicated).
The rules are data: the config's `mesh.rules` can replace these defaults.
"""

from __future__ import annotations

import contextlib

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


def _axis_names(axes) -> tuple[str, ...]:
    return () if axes is None else (axes if isinstance(axes, tuple) else (axes,))


def fitted_spec(names, shape, mesh, rules=DEFAULT_RULES) -> PartitionSpec:
    """The PartitionSpec of one array with logical `names` (one per dim, None = unnamed).

    Rules are taken in order; a rule (name, axes) gives `axes` to the first still-free dim
    called `name` when none of those mesh axes is used yet in this array and their size
    divides the dim. A rule with axes None, or one that does not fit, leaves the dim free
    for later rules; dims no rule gives an axis stay replicated.
    """
    if names is None or len(names) != len(shape):
        return PartitionSpec(*([None] * len(shape)))
    assigned: list = [None] * len(shape)
    used: set[str] = set()
    for name, axes in rules:
        mesh_axes = _axis_names(axes)
        if not mesh_axes or used & set(mesh_axes):
            continue
        size = 1
        for axis in mesh_axes:
            size *= mesh.shape[axis]
        for dim, dim_name in enumerate(names):
            if dim_name == name and assigned[dim] is None and shape[dim] % size == 0:
                assigned[dim] = axes
                used.update(mesh_axes)
                break
    return PartitionSpec(*assigned)


def logical_shardings(abstract_tree, mesh, rules=DEFAULT_RULES):
    """NamedShardings for a pytree of (possibly nn.Partitioned-boxed) arrays or ShapeDtypeStructs.

    Leaves without logical names are replicated; each leaf's spec is `fitted_spec`, so a
    mesh axis that does not divide one named dim moves on to the next rule's dim.
    """
    specs = nn.get_partition_spec(abstract_tree)
    unboxed = nn.meta.unbox(abstract_tree)

    def one(leaf, spec):
        # Names that do not match the leaf's rank (e.g. Adafactor's factored row/column
        # statistics, which inherit their parameter's box) mean: replicate.
        names = tuple(spec) if isinstance(spec, PartitionSpec) and len(spec) == len(leaf.shape) else None
        return NamedSharding(mesh, fitted_spec(names, leaf.shape, mesh, rules))

    return jax.tree_util.tree_map(one, unboxed, specs, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh, ndim: int) -> NamedSharding:
    """Shard the leading (batch) axis over (data, fsdp); the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


@contextlib.contextmanager
def activation_sharding(mesh, rules=DEFAULT_RULES):
    """Within this context, tracing a model pins its named activations
    (nn.with_logical_constraint: batch, height, width, channels, length) to `mesh` by
    `rules`; outside it those constraints are no-ops and XLA's propagation alone decides
    how activations are laid out, which with fsdp-sharded weights may split them by
    channel instead of by example. Wrap the trace (jit(...).lower / the first call) only:
    the state's own shardings come from `logical_shardings`."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        yield
