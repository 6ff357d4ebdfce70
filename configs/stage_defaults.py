"""Sections shared by every stage config: text, diffusion, optimizer, train, checkpoint,
mesh, sampling. A preset file builds its `model` and `data` and calls `add_training_sections`.

Fields (each overridable on the command line as --config.SECTION.FIELD=VALUE):
  seed                      one seed for the run: init, data order, noise (fold_in by step)
  text.encoder              built-in encoder name, Hugging Face T5 dir or hub id (design.md §2)
  text.cache_dtype          float16 | bfloat16: stored embedding cache dtype
  diffusion.schedule        Schedule fields: kind cosine | linear | discrete_linear, logsnr_min/max
  diffusion.prediction      eps (the paper) | x | v
  diffusion.min_snr_gamma   None (off, the paper) or gamma for min-SNR weighting
  diffusion.snr_floor       None (off, the paper) or the floor of the x-space loss weight
                            (truncated SNR): weight clip(SNR, snr_floor, min_snr_gamma)
  diffusion.offset_noise    None (off, the paper) or s: training noise n + s_t * m, m one value
                            per image and channel (offset noise; design.md §3)
  diffusion.offset_profile  constant (s_t = s) | sigma2 (s_t = s * sigma_t^2)
  diffusion.offset_logsnr_max  None (every level) or the log-SNR above which s_t = 0
  diffusion.aug_schedule    SR noise-conditioning augmentation schedule (cosine: our choice)
  optimizer.*               name adafactor | adam, peak_lr, warmup_steps, end_lr,
                            b1, b2, eps, grad_clip_norm (0 = off)
  train.steps               total training steps (also the lr schedule's cosine horizon)
  train.batch_size          GLOBAL batch (split over processes, then over data x fsdp devices)
  train.grad_accum_steps    micro-batches per step (the batch must divide)
  train.text_drop_prob      classifier-free guidance dropout (0.1, design.md §2)
  train.ema_decay           EMA of the params used for sampling
  train.log_every           steps between logged metrics (and NaN checks)
  train.max_nonfinite_streak  stop after this many skipped (NaN/inf) updates in a row
  train.init_from           '' or a trained stage's workdir: a fresh run starts from its latest
                            params and EMA params (same model section; the resolution may differ)
  train.sample_every        steps between sample grids (0 = never); train.sample_prompts
  eval.*                    in-loop FID and CLIP score (defaults: imagen_jax.config.EVAL_DEFAULTS):
                            every (0 = never), num_images, batch_size, inception_weights, clip,
                            reference_split, reference_images
  checkpoint.every / keep / async_save
  mesh.data / mesh.fsdp     device mesh (-1: all remaining devices); mesh.rules: None = defaults
  sampling.*                how the stage samples (grids, `imagen-jax sample`, the cascade;
                            defaults: imagen_jax.config.SAMPLING_DEFAULTS): sampler,
                            num_steps, threshold, quantile, gamma, eta, guidance_weight,
                            aug_level (SR),
                            image_size (0: the resolution), start_logsnr (None: the
                            grid starts at t = 1; else at this log-SNR),
                            guidance_logsnr_min / _max (None: guide at every step; else
                            only at log-SNRs inside the interval, Kynkaanniemi et al. 2024)
"""

import ml_collections

from imagen_jax.config import EVAL_DEFAULTS, SAMPLING_DEFAULTS

SAMPLE_PROMPTS = (
    "a red circle on a white background",
    "a blue square on a black background",
    "a green triangle on a white background",
    "a yellow circle on a gray background",
    "a small purple square in the top left on a white background",
    "a large orange triangle on a black background",
    "a pink circle on a blue background",
    "a white square on a red background",
)


def add_training_sections(
    config: ml_collections.ConfigDict,
    *,
    optimizer: str,
    steps: int,
    batch_size: int,
    peak_lr: float = 1e-4,
    warmup_steps: int = 10_000,
    schedule: str = "cosine",
    ema_decay: float = 0.9999,
    checkpoint_every: int = 1000,
    sample_every: int = 1000,
    log_every: int = 50,
) -> ml_collections.ConfigDict:
    config.seed = 0
    config.text = ml_collections.ConfigDict(dict(encoder="tiny-random-byt5", cache_dtype="float16"))
    config.diffusion = ml_collections.ConfigDict(
        dict(
            schedule=dict(kind=schedule, logsnr_min=-20.0, logsnr_max=20.0),
            prediction="eps",
            min_snr_gamma=None,
            snr_floor=None,
            offset_noise=None,
            offset_profile="constant",
            offset_logsnr_max=None,
            aug_schedule=dict(kind="cosine"),
        )
    )
    config.optimizer = ml_collections.ConfigDict(
        dict(
            name=optimizer,
            peak_lr=peak_lr,
            warmup_steps=warmup_steps,
            end_lr=0.0,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            grad_clip_norm=0.0,
        )
    )
    config.train = ml_collections.ConfigDict(
        dict(
            steps=steps,
            batch_size=batch_size,
            grad_accum_steps=1,
            text_drop_prob=0.1,
            ema_decay=ema_decay,
            ema_warmup=True,
            log_every=log_every,
            max_nonfinite_streak=10,
            sample_every=sample_every,
            sample_prompts=SAMPLE_PROMPTS,
            init_from="",
        )
    )
    config.checkpoint = ml_collections.ConfigDict(dict(every=checkpoint_every, keep=3, async_save=True))
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, rules=None))
    config.sampling = ml_collections.ConfigDict(SAMPLING_DEFAULTS)
    config.eval = ml_collections.ConfigDict(EVAL_DEFAULTS)
    return config
