"""Scaling: the device mesh, logical axis rules and multi-host start-up."""

from imagen_jax.parallel.distributed import initialize
from imagen_jax.parallel.mesh import MESH_AXES, batch_axis_size, make_mesh
from imagen_jax.parallel.rules import (
    DEFAULT_RULES,
    activation_sharding,
    batch_sharding,
    logical_shardings,
    rules_from_config,
)

__all__ = [
    "DEFAULT_RULES",
    "MESH_AXES",
    "activation_sharding",
    "batch_axis_size",
    "batch_sharding",
    "initialize",
    "logical_shardings",
    "make_mesh",
    "rules_from_config",
]
