"""The train state and its creation directly in its sharded layout (DESIGN: Shape).

`create_sharded_state` traces initialization with jax.eval_shape (no memory), derives a
NamedSharding for every leaf from the logical axis names the model put on its parameters
(the optimizer moments and the EMA inherit them), then runs initialization under jit
with those out_shardings: the state is born sharded and is never whole on one host.
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


def create_sharded_state(init_params_fn, optimizer, rng, mesh, rules):
    """(state, shardings): `init_params_fn(rng)` returns the model's BOXED params
    (nn.LogicallyPartitioned leaves, as `model.init(...)["params"]` does)."""

    def boxed_state(rng):
        return init_state(init_params_fn(rng), optimizer)

    abstract = jax.eval_shape(boxed_state, rng)
    shardings = logical_shardings(abstract, mesh, rules)
    state = run_once(lambda r: nn.meta.unbox(boxed_state(r)), rng, out_shardings=shardings)
    return state, shardings
