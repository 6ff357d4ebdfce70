"""Training: optimizers, EMA (the train state, step, loop and checkpoints build on these)."""

from imagen_jax.train.ema import ema_decay_at, ema_update
from imagen_jax.train.optimizers import (
    OPTIMIZERS,
    learning_rate_schedule,
    make_optimizer,
)

__all__ = ["OPTIMIZERS", "ema_decay_at", "ema_update", "learning_rate_schedule", "make_optimizer"]
