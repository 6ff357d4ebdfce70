"""The frozen T5 that runs inside the train step when the data carries tokens (data.text =
'tokens', design.md §2: the text encoder is frozen).

Its params are an argument of the compiled step, FSDP-sharded by the same logical rules as
the UNet, and never part of the train state: not in the optimizer state, not in
checkpoints; they are loaded from the config's encoder at start-up (and so again on resume).
The step encodes each (micro-)batch's token ids before text dropout, under stop_gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from imagen_jax.text.config import T5EncoderConfig
from imagen_jax.text.t5 import abstract_params, encode_tokens


@dataclasses.dataclass(frozen=True)
class StepTextEncoder:
    """config: the T5's shape; dtype: its compute dtype; params: jax.Arrays on the training
    mesh (the trainer) or ShapeDtypeStructs carrying their shardings (compile-check)."""

    config: T5EncoderConfig
    dtype: Any
    params: Any

    @classmethod
    def from_encoder(cls, encoder) -> StepTextEncoder:
        """From a loaded TextEncoder (load_text_encoder(..., mesh=the training mesh))."""
        return cls(encoder.config, encoder.dtype, encoder.params)

    @classmethod
    def abstract(cls, config: T5EncoderConfig, mesh, rules, dtype=jnp.bfloat16) -> StepTextEncoder:
        """Params as ShapeDtypeStructs in `dtype`, sharded on `mesh` by `rules` (no memory):
        what compile-check lowers the step with."""
        from imagen_jax.parallel import logical_shardings

        boxed = abstract_params(config, dtype)
        shardings = logical_shardings(boxed, mesh, rules)
        params = jax.tree_util.tree_map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), nn.meta.unbox(boxed), shardings
        )
        return cls(config, dtype, params)

    @property
    def param_specs(self) -> Any:
        return jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), self.params
        )

    @property
    def shardings(self) -> Any:
        return jax.tree_util.tree_map(lambda x: x.sharding, self.params)

    def encode(self, params, token_ids, mask):
        """[B, L] int32 ids, [B, L] bool mask -> [B, L, D] float32, 0 at padding, no gradient."""
        return jax.lax.stop_gradient(encode_tokens(params, token_ids, mask, config=self.config, dtype=self.dtype))
