"""The train state and its creation directly in its sharded layout (design.md §7).

`abstract_sharded_state` traces initialization with jax.eval_shape (no memory) and derives
a NamedSharding for every leaf from the logical axis names the model put on its parameters
(the optimizer moments and the EMA inherit them): enough to compile the train step for
any device set, a TPU topology included. `create_sharded_state` then runs initialization
under jit with those out_shardings: the state is born sharded and is never whole on one host.
"""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.parallel.rules import logical_shardings
from imagen_jax.run_once import run_once


@flax.struct.dataclass
class TrainState:
    """step: int32 []; params / ema_params: the model's param tree (fp32); opt_state: optax's;
    nonfinite_streak: consecutive skipped (NaN/inf) updates; nonfinite_total: all skipped."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    nonfinite_streak: jax.Array
    nonfinite_total: jax.Array


def init_state(params, optimizer) -> TrainState:
    """A fresh state around `params` (boxed or plain): step 0, EMA = params."""
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        ema_params=params,
        nonfinite_streak=jnp.zeros((), jnp.int32),
        nonfinite_total=jnp.zeros((), jnp.int32),
    )


def _boxed_state_fn(init_params_fn, optimizer):
    return lambda rng: init_state(init_params_fn(rng), optimizer)


def abstract_sharded_state(init_params_fn, optimizer, rng, mesh, rules):
    """(abstract_state, shardings) with no memory used: the TrainState as jax.ShapeDtypeStruct
    leaves that carry their NamedSharding on `mesh`, and the tree of those shardings.
    `init_params_fn(rng)` returns the model's BOXED params (nn.LogicallyPartitioned leaves,
    as `model.init(...)["params"]` does)."""
    boxed = jax.eval_shape(_boxed_state_fn(init_params_fn, optimizer), rng)
    shardings = logical_shardings(boxed, mesh, rules)
    abstract = jax.tree_util.tree_map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
        nn.meta.unbox(boxed),
        shardings,
    )
    return abstract, shardings


def create_sharded_state(init_params_fn, optimizer, rng, mesh, rules, shardings=None):
    """(state, shardings): the initialized state, born sharded. `shardings` (from
    `abstract_sharded_state`) skips deriving them again."""
    if shardings is None:
        _, shardings = abstract_sharded_state(init_params_fn, optimizer, rng, mesh, rules)
    boxed_state = _boxed_state_fn(init_params_fn, optimizer)
    state = run_once(lambda r: nn.meta.unbox(boxed_state(r)), rng, out_shardings=shardings)
    return state, shardings
