"""The built-in demo (the README's main command, `imagen-jax demo`): a two-stage shapes
cascade, text -> 32 px -> 64 px, trained from scratch on 2 CPU cores, then sampled and
evaluated. Sized for a 30-minute budget on a 2-core machine.

Sections:
  base, sr      full stage configs (as `imagen-jax train` reads), trained into
                <workdir>/base and <workdir>/sr; both read one dataset and one caption cache
  eval.prompts  the fixed prompt list sampled through the cascade and scored
                (one object each, every color with every shape)
  eval.two_object_prompts   harder prompts, scored and reported apart
  eval.guidance_weights     the base stage's guidance sweep (dynamic vs no thresholding)
  eval.sr_images            true test images for SR fidelity (SR vs bicubic, PSNR/SSIM)
  eval.seed, eval.batch_size  sampling seed and prompts per sampler call
  eval.accuracy_seeds   the base stage's prompt accuracy is also scored over this many
                        seeds (eval.seed, eval.seed + 1, ...): one seed of 30 prompts varies
                        by +-15 points; over 16 seeds (480 images) the mean's standard
                        error is about 1.5 points
"""

import ml_collections
import shapes_base32
import shapes_sr64

from imagen_jax.data.shapes_scene import COLOR_NAMES, SHAPES

DATASET = "imagen_shapes/64px_train10000"  # 64 px scenes; the base stage reads them at 32 px
# One token per word: a random T5 over bytes needs many more steps before a stage follows
# its prompts (measured: no text use after 700 steps); the longest caption is 22 tokens.
# "-ordered": relative position biases at std 1, so a color word's output says whether it
# names the object or the background (measured: base accuracy over seeds 0-3, mean 39.2%
# with tiny-random-t5-words, 60.0% with this one, both at 1000 steps of 32).
TEXT_ENCODER = "tiny-random-t5-words-ordered"
MAX_TEXT_LENGTH = 24


def _contrasting_background(color: str) -> str:
    return "black" if color in ("white", "yellow", "pink", "orange", "gray") else "white"


def demo_prompts() -> tuple[str, ...]:
    """30 one-object prompts: every color with every shape; a third without background."""
    prompts = []
    for i, shape in enumerate(SHAPES):
        for j, color in enumerate(COLOR_NAMES):
            article = "an" if color[0] in "aeiou" else "a"
            if (i + j) % 3 == 0:
                prompts.append(f"{article} {color} {shape}")
            else:
                prompts.append(f"{article} {color} {shape} on a {_contrasting_background(color)} background")
    return tuple(prompts)


TWO_OBJECT_PROMPTS = (
    "a red circle and a blue square on a white background",
    "a green triangle to the left of a yellow circle",
    "a purple square above an orange triangle on a white background",
    "a small blue circle in the top left and a medium red square in the bottom right on a white background",
    "a white triangle and a pink circle on a black background",
    "an orange square below a green circle",
)


def _stage(preset, steps: int, checkpoint_every: int):
    config = preset.get_config()
    config.data.name = DATASET
    config.data.max_text_length = MAX_TEXT_LENGTH
    config.data.num_workers = 0  # the 2 cores are busy with the train step; threads suffice at these sizes
    config.text.encoder = TEXT_ENCODER
    # Short runs: min-SNR-5 loss weighting (Hang et al. 2023; an option in SPEC 3) to spend
    # the few steps on the noise levels that decide the picture; a higher peak lr, a short
    # warmup and a faster EMA.
    config.diffusion.min_snr_gamma = 5.0
    config.optimizer.peak_lr = 2e-3
    config.optimizer.warmup_steps = 50
    config.train.ema_decay = 0.995
    config.train.steps = steps
    config.optimizer.total_steps = steps
    config.checkpoint.every = checkpoint_every
    config.train.sample_every = checkpoint_every
    return config


def get_config(size: str = "") -> ml_collections.ConfigDict:
    """The demo; `configs/demo.py:smoke` is a seconds-long version for tests."""
    if size not in ("", "smoke"):
        raise ValueError(f"Unknown demo size {size!r}; use configs/demo.py or configs/demo.py:smoke.")
    return _smoke(_demo()) if size == "smoke" else _demo()


def _demo() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    # The base stage's accuracy follows its training length (README, "Longer and cheaper base
    # stages"), so its UNet runs on 2 x 2 pixel blocks (model.patch_size; not in the paper): on
    # 2 CPU cores the training loop runs at 108-112 img/s against about 38. Measured (base
    # accuracy, seeds 0-7, about 20 min of training each): plain UNet 5400 steps 70.4%; 2 x 2
    # blocks, 24 channels, (1, 2, 4), 14000 steps 77.5%; 32 channels, (1, 2, 2), 14000 steps
    # 82.1%. The last with the guidance interval below, seeds 0-15: 89.4% at 14000 steps,
    # 92.1% at 17000 (20.9 min).
    config.base = _stage(shapes_base32, steps=17000, checkpoint_every=4250)
    config.base.model.update(patch_size=2, channels=32, channel_mult=(1, 2, 2), head_dim=16)
    config.base.data.image_size = 32  # read the 64 px scenes at 32 px
    # Batch 8: on 2 CPU cores a step's cost is linear in the batch (39.9 / 41.5 / 41.9 img/s
    # at 8 / 16 / 32), so the same 32,000 images buy 4x the updates of batch 32. Measured
    # (base accuracy, seeds 0-3, one sweep): 1000 x 32 55.0%, 2000 x 16 66.7%, 4000 x 8 73.3%.
    # lr and EMA follow the batch: lr ~ sqrt(batch) from 2e-3 at 32, the EMA's horizon and
    # the warmup kept in images.
    config.base.train.batch_size = 8
    config.base.optimizer.peak_lr = 1e-3
    config.base.optimizer.warmup_steps = 200
    config.base.train.ema_decay = 0.99875
    config.base.sampling.guidance_weight = 5.0  # the paper's samples use 5 (SPEC 3)
    # Guidance only at log-SNR <= 2 (the guidance interval of Kynkaanniemi et al. 2024; not in
    # the paper); the less noisy steps take the conditional model alone, in one pass. Measured
    # on the base stage above at 14000 steps (w = 5, seeds 0-15): 82.1% guided at every step,
    # 89.4% with the interval (up to 4: 87.9%, up to 0: 88.3%; from -6 or -3 up to 2: 87.5% /
    # 85.0%; seeds 0-7). w = 3 / 4 with the interval: 85.6% / 88.1%.
    config.base.sampling.guidance_logsnr_max = 2.0
    config.sr = _stage(shapes_sr64, steps=500, checkpoint_every=250)
    # Batch 16, half the earlier demo's SR images: 34.09 dB against 34.58 at batch 32 (bicubic
    # 33.14); the 3.3 minutes saved (SR 7.4 -> 4.1 min) go to the base stage.
    config.sr.train.batch_size = 16
    # x-prediction (SPEC 3 allows eps, x, v): after 100-300 steps, eps and v SR stages had not
    # learned the low noise levels (their samples were noise); an x-predicting stage's error
    # is a smooth image error, and its loss is the MSE to the true image. No min-SNR
    # weighting: SR detail lives at the low noise levels min-SNR turns down.
    config.sr.diffusion.prediction = "x"
    config.sr.diffusion.min_snr_gamma = None
    # The stage starts as bicubic upsampling (model.low_res_skip, identity-initialised) and
    # learns the correction; measured at 500 steps, sampled PSNR on test images 19-21 dB without it.
    config.sr.model.low_res_skip = True
    config.sr.model.low_res_resize = "bicubic"
    config.sr.optimizer.peak_lr = 5e-4
    # Noise conditioning augmentation (SPEC 3: level ~ U[0, 1] per example; the schedule is
    # ours): a mild one, noise std 0 at level 0 to 0.17 at level 1 (log-SNR 3.5). With the
    # cosine schedule most examples' low-res images are mostly noise, and in 200 steps the
    # stage learned 3x worse predictions on clean inputs than with a mild one (beta 1e-4 to 2e-4).
    config.sr.diffusion.aug_schedule = dict(kind="linear", beta_start=1e-5, beta_end=5e-5)
    config.sr.sampling.guidance_weight = 1.0  # SR guidance sharpens little here and doubles the cost
    # Static thresholding: dynamic thresholding rescales a whole image whose white or black
    # areas overshoot +-1 by a little (0.5% of pixels suffice), which dims and tints SR
    # outputs (measured: 32.1 dB dynamic vs 34.3 dB static, bicubic 32.9).
    config.sr.sampling.threshold = "static"
    config.eval = ml_collections.ConfigDict(dict(
        prompts=demo_prompts(),
        two_object_prompts=TWO_OBJECT_PROMPTS,
        guidance_weights=(1.0, 3.0, 5.0, 8.0),
        sr_images=64,
        seed=0,
        accuracy_seeds=16,
        batch_size=32,
    ))
    return config



def _smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Same code path, tiny everything: 16 px -> 32 px, a few steps, a few prompts."""
    for name, resolution in (("base", 16), ("sr", 32)):
        stage = config[name]
        stage.data.name = "imagen_shapes/32px_train64_test16"
        stage.resolution = resolution
        stage.data.image_size = resolution
        stage.train.steps = stage.optimizer.total_steps = 4
        stage.train.batch_size = 8
        stage.train.log_every = 2
        stage.checkpoint.every = stage.train.sample_every = 2
        stage.optimizer.warmup_steps = 1
        stage.sampling.num_steps = 4
        stage.train.sample_prompts = stage.train.sample_prompts[:2]
    config.sr.low_res_resolution = config.sr.data.low_res_size = 16
    config.base.model.update(channels=8, channel_mult=(1, 2), head_dim=8, embed_dim=32, attention_resolutions=(8,),
                             norm_groups=4)
    config.sr.model.update(channels=(8, 16), num_res_blocks=(1, 1), strides=(2, 2), attention=("none", "self"),
                           embed_dim=32, norm_groups=4)
    config.eval.prompts = config.eval.prompts[:3]
    config.eval.two_object_prompts = config.eval.two_object_prompts[:1]
    config.eval.guidance_weights = (1.0, 5.0)
    config.eval.sr_images = 3
    config.eval.accuracy_seeds = 2
    config.eval.batch_size = 4
    return config
