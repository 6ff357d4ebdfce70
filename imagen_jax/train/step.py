"""The pure train step: `train_step(state, batch, key) -> (state, metrics)` (design.md §2, §3).

Per step: in text mode 'tokens' the frozen T5 encodes the batch's token ids (step_text.py),
then classifier-free text dropout (zeroed text, design.md §2), for SR stages noise
conditioning augmentation of the low-res image (its own independent noise and a
per-example aug level, design.md §3), the diffusion loss, optional gradient accumulation over
micro-batches, the optimizer update and the EMA. A non-finite loss or gradient skips
the update (state unchanged but for the counters). All randomness comes from
fold_in(key, step), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from imagen_jax.config import is_super_resolution
from imagen_jax.diffusion import Schedule, diffusion_loss, drop_text, q_sample
from imagen_jax.train.ema import ema_decay_at, ema_update
from imagen_jax.train.state import TrainState


def make_train_step(model, optimizer, lr_schedule, config, text_encoder=None):
    """Close over the static pieces; returns
    train_step(state, batch, key, text_params=None) -> (state, metrics).

    batch: "image" [B, H, W, 3] in [-1, 1], "text_embedding" [B, L, D] float32 (cached) or
    "text_tokens" [B, L] int32 (data.text = 'tokens': encoded here by `text_encoder`, a
    step_text.StepTextEncoder, with `text_params`), "text_mask" [B, L] bool, and for SR
    stages "low_res" [B, h, w, 3]. key: the run's root training key.
    """
    schedule = Schedule.from_config(config.diffusion.schedule)
    aug_schedule = Schedule.from_config(config.diffusion.get("aug_schedule", {"kind": "cosine"}))
    prediction = config.diffusion.get("prediction", "eps")
    min_snr_gamma = config.diffusion.get("min_snr_gamma", None)
    snr_floor = config.diffusion.get("snr_floor", None)
    offset_noise = config.diffusion.get("offset_noise", None)
    offset_profile = config.diffusion.get("offset_profile", "constant")
    offset_logsnr_max = config.diffusion.get("offset_logsnr_max", None)
    text_drop_prob = config.train.get("text_drop_prob", 0.1)
    accum = int(config.train.get("grad_accum_steps", 1))
    ema_decay = config.train.get("ema_decay", 0.9999)
    ema_warmup = config.train.get("ema_warmup", True)
    is_sr = is_super_resolution(config)

    def encoded_text(batch, text_params):
        if "text_tokens" not in batch:
            return batch["text_embedding"]
        if text_encoder is None:
            raise ValueError("a batch of text_tokens needs the step's text_encoder (data.text = 'tokens')")
        return text_encoder.encode(text_params, batch["text_tokens"], batch["text_mask"])

    def loss_fn(params, batch, key, text_params):
        drop_key, aug_t_key, aug_noise_key, loss_key, dropout_key = jax.random.split(key, 5)
        batch_size = batch["image"].shape[0]
        drop = jax.random.uniform(drop_key, (batch_size,)) < text_drop_prob
        text, mask = drop_text(encoded_text(batch, text_params), batch["text_mask"], drop)
        cond = {"text_embedding": text, "text_mask": mask}
        if is_sr:
            aug_logsnr = aug_schedule(jax.random.uniform(aug_t_key, (batch_size,)))
            low_res = batch["low_res"]
            noise = jax.random.normal(aug_noise_key, low_res.shape, low_res.dtype)
            cond["low_res"] = q_sample(low_res, aug_logsnr, noise)
            cond["aug_logsnr"] = aug_logsnr

        def model_fn(z, logsnr, cond):
            return model.apply({"params": params}, z, logsnr, train=True, rngs={"dropout": dropout_key}, **cond)

        loss, _ = diffusion_loss(
            model_fn,
            batch["image"],
            cond,
            loss_key,
            schedule=schedule,
            prediction=prediction,
            min_snr_gamma=min_snr_gamma,
            snr_floor=snr_floor,
            offset_noise=offset_noise,
            offset_profile=offset_profile,
            offset_logsnr_max=offset_logsnr_max,
        )
        return loss

    grad_fn = jax.value_and_grad(loss_fn)

    def loss_and_grads(params, batch, key, text_params=None):
        if accum == 1:
            return grad_fn(params, batch, key, text_params)
        batch_size = batch["image"].shape[0]
        if batch_size % accum:
            raise ValueError(f"batch {batch_size} is not divisible by train.grad_accum_steps={accum}; change either")
        # Micro-batch i takes examples i, i + accum, i + 2 accum, ...: every device's contiguous
        # block of the batch-sharded global batch holds its share of each micro-batch, so the
        # split needs no communication and each micro-batch stays spread over all devices.
        micro = jax.tree_util.tree_map(
            lambda x: jnp.swapaxes(x.reshape((x.shape[0] // accum, accum) + x.shape[1:]), 0, 1), batch
        )

        def body(carry, inputs):
            i, mb = inputs
            loss, grads = grad_fn(params, mb, jax.random.fold_in(key, i), text_params)
            return jax.tree_util.tree_map(jnp.add, carry, (loss, grads)), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree_util.tree_map(jnp.zeros_like, params))
        (loss, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
        return jax.tree_util.tree_map(lambda g: g / accum, (loss, grads))

    def train_step(state: TrainState, batch, key, text_params=None):
        step_key = jax.random.fold_in(key, state.step)
        loss, grads = loss_and_grads(state.params, batch, step_key, text_params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = ema_update(state.ema_params, params, ema_decay_at(state.step, ema_decay, ema_warmup))
        keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = TrainState(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=keep(opt_state, state.opt_state),
            ema_params=keep(ema, state.ema_params),
            nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
            nonfinite_total=state.nonfinite_total + jnp.where(finite, 0, 1),
        )
        metrics = {
            "loss": loss,
            "grad_norm": grad_norm,
            "learning_rate": lr_schedule(state.step),
            "nonfinite_streak": new_state.nonfinite_streak,
            "nonfinite_total": new_state.nonfinite_total,
        }
        return new_state, metrics

    train_step.loss_and_grads = loss_and_grads  # exposed for tests and tooling
    return train_step
