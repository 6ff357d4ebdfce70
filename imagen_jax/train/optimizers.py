"""The paper's optimizers and learning-rate schedule (design.md §1).

All stages: peak lr 1e-4, 10k-step linear warmup, then cosine decay. Base: Adafactor with
optax defaults; SR stages: Adam (b1 0.9, b2 0.999, eps 1e-8, no weight decay). Optional
global-norm clipping in front of either.
"""

from __future__ import annotations

import optax

OPTIMIZERS = ("adafactor", "adam")


def learning_rate_schedule(
    *, peak_lr: float, warmup_steps: int, total_steps: int, end_lr: float = 0.0
) -> optax.Schedule:
    """Linear warmup from 0 to peak_lr over warmup_steps, then cosine decay to end_lr at total_steps."""
    if total_steps <= warmup_steps:
        return optax.linear_schedule(0.0, peak_lr, max(warmup_steps, 1))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_lr, warmup_steps=warmup_steps, decay_steps=total_steps, end_value=end_lr
    )


def make_optimizer(config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """(optimizer, lr schedule) from an optimizer config section; the schedule decays over
    `total_steps` (the run's train.steps: the horizon is never set apart from the run's length).

    Fields: name ("adafactor" | "adam"), peak_lr, warmup_steps, end_lr,
    b1, b2, eps (Adam), grad_clip_norm (0 or None: no clipping).
    """
    name = config.name
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; set --config.optimizer.name to one of {OPTIMIZERS}")
    schedule = learning_rate_schedule(
        peak_lr=config.peak_lr,
        warmup_steps=config.warmup_steps,
        total_steps=total_steps,
        end_lr=config.get("end_lr", 0.0),
    )
    if name == "adafactor":
        opt = optax.adafactor(learning_rate=schedule)
    else:
        opt = optax.adam(
            learning_rate=schedule, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999), eps=config.get("eps", 1e-8)
        )
    clip = config.get("grad_clip_norm", None)
    if clip:
        opt = optax.chain(optax.clip_by_global_norm(clip), opt)
    return opt, schedule
