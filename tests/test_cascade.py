"""The cascade end to end on tiny random stages: workdirs -> EMA params -> text -> base ->
SR; shapes, dtypes, determinism; the `imagen-jax sample` CLI and its errors; safe names."""

import json
import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import pytest

from imagen_jax.cli import main
from imagen_jax.config import to_dict
from imagen_jax.images import to_uint8
from imagen_jax.models import abstract_params, build_model
from imagen_jax.parallel import make_mesh
from imagen_jax.pipeline import Cascade, StageConfig, WorkdirError, sample_stage
from imagen_jax.pipeline.outputs import image_file_names, prompt_slug
from imagen_jax.train import make_optimizer
from imagen_jax.train.checkpoints import Checkpoints
from imagen_jax.train.state import init_state
from imagen_jax.train.workdir import check_workdir_config

TEXT_LEN = 40
PROMPTS = ["a red circle", "a blue square on a white background", "a green triangle"]


def tiny_stage_config(stage: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.resolution = 16 if stage == "base" else 32
    common = dict(text_dim=256, embed_dim=32, noise_sinusoid_dim=16, text_pool_heads=2, norm_groups=4)
    config.low_res_resolution = 0 if stage == "base" else 16
    if stage == "base":
        config.model = ml_collections.ConfigDict(
            dict(
                family="unet",
                channels=8,
                channel_mult=(1, 2),
                num_res_blocks=1,
                attention_resolutions=(8,),
                head_dim=8,
                **common,
            )
        )
    else:
        config.model = ml_collections.ConfigDict(
            dict(
                family="efficient_unet",
                channels=(8, 16),
                num_res_blocks=(1, 1),
                strides=(2, 2),
                attention=("none", "self"),
                num_heads=2,
                **common,
            )
        )
    config.text = ml_collections.ConfigDict(dict(encoder="tiny-random-byt5", cache_dtype="float16"))
    config.data = ml_collections.ConfigDict(dict(max_text_length=TEXT_LEN))
    config.diffusion = ml_collections.ConfigDict(
        dict(schedule=dict(kind="cosine"), prediction="eps", aug_schedule=dict(kind="cosine"))
    )
    config.optimizer = ml_collections.ConfigDict(dict(name="adam", peak_lr=1e-3, warmup_steps=1))
    config.sampling = ml_collections.ConfigDict(
        dict(
            sampler="ddim",
            num_steps=3,
            threshold="dynamic",
            guidance_weight=3.0,
            aug_level=0.1 if stage == "sr" else 0.0,
        )
    )
    return config


def make_workdir(root, stage: str, step: int = 7, name: str = "", config=None):
    """A workdir as `imagen-jax train` leaves it: config.json and one checkpoint whose EMA
    params differ from its params (so loading the wrong subtree is caught)."""
    config = config or tiny_stage_config(stage)
    workdir = os.path.join(root, name or stage)
    check_workdir_config(config, workdir, override=False)
    # Random params of the model's exact tree (no init compile: this is a format test).
    shapes = nn.meta.unbox(abstract_params(build_model(config), config))
    rng = np.random.default_rng(0 if stage == "base" else 1)
    params, ema = (jax.tree.map(lambda s: rng.normal(0, 0.05, s.shape).astype(s.dtype), shapes) for _ in range(2))
    optimizer, _ = make_optimizer(config.optimizer, 10)
    state = init_state(params, optimizer).replace(ema_params=ema)
    checkpoints = Checkpoints(os.path.join(workdir, "checkpoints"), save_every=1, async_save=False)
    checkpoints.save(step, state, to_dict(config), force=True)
    checkpoints.close()
    return workdir, state


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cascade"))
    base, base_state = make_workdir(root, "base")
    sr, _ = make_workdir(root, "sr")
    return {"root": root, "base": base, "sr": sr, "base_state": base_state}


@pytest.fixture(scope="module")
def cascade(stages):
    # One device: the 8 fake CPU devices of the suite would each run a replicated copy.
    return Cascade.from_workdirs([stages["base"], stages["sr"]], mesh=make_mesh(1, 1, jax.devices()[:1]))


def test_loads_the_ema_params_and_the_sampling_section(cascade, stages):
    same = jax.tree.map(
        lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), cascade.params[0], stages["base_state"].ema_params
    )
    assert all(jax.tree.leaves(same))
    base, sr = cascade.stages
    assert (base.image_size, base.low_res_size, sr.image_size, sr.low_res_size) == (16, 0, 32, 16)
    assert base.sampler.kind == "ddim" and base.sampler.num_steps == 3 and base.guidance_weight == 3.0
    assert sr.aug_level == pytest.approx(0.1)
    assert cascade.text_encoder.max_length == TEXT_LEN


def test_cascade_shapes_dtypes_and_determinism(cascade):
    out = cascade.sample(PROMPTS, seed=3, batch_size=2)
    assert [im.shape for im in out.images] == [(3, 16, 16, 3), (3, 32, 32, 3)]
    assert all(im.dtype == np.uint8 for im in out.images)
    assert out.final is out.images[-1] and out.prompts == PROMPTS
    again = cascade.sample(PROMPTS, seed=3, batch_size=2)
    for a, b in zip(out.images, again.images):
        np.testing.assert_array_equal(a, b)
    other = cascade.sample(PROMPTS, seed=4, batch_size=2)
    assert not np.array_equal(other.images[0], out.images[0])
    # Per-call stage settings reach the sampler: another guidance weight, other images.
    changed = cascade.sample(PROMPTS, seed=3, batch_size=2, stage_settings=[{"guidance_weight": 1.0}, {}])
    assert not np.array_equal(changed.images[0], out.images[0])


def test_the_pure_stage_sample_is_what_the_cascade_runs(cascade):
    out = cascade.sample(PROMPTS[:2], seed=5, batch_size=2)
    embedding, mask = (np.asarray(a) for a in cascade.text_encoder.encode(PROMPTS[:2]))
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(5), 0), 0)
    base = sample_stage(cascade.params[0], embedding, mask, key, config=cascade.stages[0])
    assert base.shape == (2, 16, 16, 3) and base.dtype == np.float32
    assert float(np.abs(base).max()) <= 1.0  # thresholded x_hat
    np.testing.assert_array_equal(to_uint8(base), out.images[0])
    with pytest.raises(ValueError, match="pass low_res"):
        sample_stage(cascade.params[1], embedding, mask, key, config=cascade.stages[1])


def test_stage_config_from_a_training_config():
    stage = StageConfig.from_config(tiny_stage_config("sr"), guidance_weight=5.0)
    assert stage.is_super_resolution and stage.guidance_weight == 5.0 and stage.image_size == 32
    with pytest.raises(ValueError, match="Unknown stage setting"):
        StageConfig.from_config(tiny_stage_config("base"), guidance=5.0)
    assert stage.sampler.start_logsnr is None  # a config without the field starts at t = 1
    config = tiny_stage_config("base")
    config.sampling.start_logsnr = -10.0
    config.sampling.guidance_logsnr_max = 2.0
    sampler = StageConfig.from_config(config).sampler
    assert (sampler.start_logsnr, sampler.guidance_logsnr_min, sampler.guidance_logsnr_max) == (-10.0, None, 2.0)


def test_sample_overrides_go_to_their_stage_and_none_unsets_an_optional_field(stages):
    from imagen_jax.commands.sample import stage_overrides

    overrides = ["0.sampling.guidance_logsnr_max=2", "0.sampling.start_logsnr=None", "1.sampling.guidance_weight=1"]
    per_stage = stage_overrides(overrides, 2)
    assert per_stage[0] == ["sampling.guidance_logsnr_max=2", "sampling.start_logsnr=None"]
    assert per_stage[1] == ["sampling.guidance_weight=1"]
    base, sr = Cascade.from_workdirs([stages["base"], stages["sr"]], config_overrides=per_stage).stages
    assert (base.sampler.guidance_logsnr_max, base.sampler.start_logsnr, sr.guidance_weight) == (2.0, None, 1.0)
    assert base.guidance_weight == 3.0  # what the stage was trained to sample with, untouched
    with pytest.raises(ValueError, match="bad value for config.sampling.num_steps"):
        Cascade.from_workdirs([stages["base"]], config_overrides=[["sampling.num_steps=None"]])


def test_workdir_errors(stages, tmp_path):
    with pytest.raises(WorkdirError, match="does not exist"):
        Cascade.from_workdirs([str(tmp_path / "nope")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorkdirError, match="no config.json"):
        Cascade.from_workdirs([str(empty)])
    untrained = tmp_path / "untrained"
    check_workdir_config(tiny_stage_config("base"), str(untrained), override=False)
    with pytest.raises(WorkdirError, match="no checkpoint yet"):
        Cascade.from_workdirs([str(untrained)])
    with pytest.raises(ValueError, match="must be a base"):
        Cascade.from_workdirs([stages["sr"], stages["base"]])


@pytest.mark.parametrize(
    "prompt",
    [
        "../../etc/passwd",
        "/absolute/path",
        "a\\b",
        "..",
        ".hidden",
        "",
        "   ",
        "a red circle" * 40,
        "ein roter Kreis über dem Quadrat",
        "NUL\x00byte",
        "CON",
        "😀",
        'a:b*c?d|e<f>g"h',
    ],
)
def test_prompt_slugs_are_safe_file_names(prompt):
    slug = prompt_slug(prompt)
    assert slug and len(slug) <= 60 and set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not slug.startswith(("-", ".")) and slug not in (".", "..")


def test_image_names_are_unique_and_ordered():
    names = image_file_names(["a red circle", "a red circle", "a red circle!", "../x"])
    assert len(set(names)) == 4 and names == sorted(names)
    assert names[0] == "000_a-red-circle.png" and names[3] == "003_x.png"


def test_sample_cli_writes_pngs_grid_and_manifest(stages, tmp_path, capsys):
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("a green triangle\n\n../../escape attempt\n")
    out = tmp_path / "out"
    code = main(
        [
            "sample",
            "--workdir",
            stages["base"],
            "--workdir",
            stages["sr"],
            "--prompt",
            "a red circle",
            "--prompts-file",
            str(prompts_file),
            "--out",
            str(out),
            "--config.0.sampling.num_steps=2",
            "--config.1.sampling.guidance_weight",
            "1",
            "--no-progress",
        ]
    )
    assert code == 0
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [e["prompt"] for e in manifest] == ["a red circle", "a green triangle", "../../escape attempt"]
    assert [(e["index"], e["seed"]) for e in manifest] == [(0, 0), (1, 0), (2, 0)]
    for entry in manifest:
        path = out / entry["image"]
        assert path.parent == out and path.exists()
    assert (out / "grid.png").exists()
    assert sorted(os.listdir(out / "stages")) == ["0_base"]
    assert len([f for f in os.listdir(out / "stages" / "0_base") if f.endswith(".png")]) == 4  # 3 + grid
    assert "stage 0 base: 16 px, ddim 2 steps, w=3" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir", "{root}/missing", "--prompt", "x"], "does not exist"),
        (["--workdir", "{base}", "--workdir", "{root}/missing", "--prompt", "x"], "does not exist"),
        (["--workdir", "{base}"], "at least one non-empty prompt"),
        (["--workdir", "{base}", "--prompt", "x", "--config.3.sampling.guidance_weight=2"], "stage 3 does not exist"),
        (["--workdir", "{base}", "--prompt", "x", "--config.0.sampling.weight=2"], "unknown config key"),
        (["--workdir", "{base}", "--prompt", "x", "--config.0.sampling.num_steps=many"], "bad value"),
        (["--workdir", "{base}", "--prompt", "x", "--config.0.model.channels=4"], "STAGE.sampling.FIELD"),
        (["--workdir", "{base}", "--prompts-file", "{root}/none.txt"], "does not exist"),
    ],
)
def test_sample_cli_errors_are_clear(stages, tmp_path, args, message, capsys):
    args = [a.format(root=stages["root"], base=stages["base"]) for a in args]
    assert main(["sample", *args, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imagen-jax sample: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_inpainting_through_the_cascade_keeps_the_unmasked_region_at_every_stage(cascade):
    """Every stage inpaints (RePaint jump 2, 2 resamples); the kept region of each stage's
    output is the input resized to that stage (thresholding applies to the generated
    region only), and each SR stage starts from the inpainted base output."""
    from imagen_jax.data.image_ops import downsample
    from imagen_jax.diffusion import Repaint
    from imagen_jax.pipeline.cascade import _Edits

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((3, 32, 32), bool)
    masks[:, 8:24, 4:20] = True  # generate a square, keep the rest
    batches = list(cascade.edit_batches(PROMPTS, images, masks=masks, repaint=Repaint(2, 2), seed=1, batch_size=2))
    edits = _Edits(images, masks, 1.0, Repaint(2, 2), 0)
    for stage, size in ((0, 16), (1, 32)):
        out = np.concatenate([b.images[stage] for b in batches])
        generate = edits.masks_at(size, np.arange(3))[..., 0] > 0
        strided = masks[:, :: 32 // size, :: 32 // size]
        assert np.all(generate[strided]) and generate.sum() <= 1.6 * strided.sum()  # the square, a pixel wider
        keep = ~generate
        expected = np.stack([downsample(im, size) for im in images])
        assert out.shape == (3, size, size, 3)
        np.testing.assert_array_equal(out[keep], expected[keep])
        assert np.abs(out[~keep].astype(int) - expected[~keep]).mean() > 10  # the square is new
    # Image-to-image at strength 1 is plain sampling, image for image.
    plain = np.concatenate([b.images[0] for b in cascade.sample_batches(PROMPTS, seed=2, batch_size=2)])
    again = np.concatenate([b.images[0] for b in cascade.edit_batches(PROMPTS, images, seed=2, batch_size=2)])
    np.testing.assert_array_equal(plain, again)
    # SR only: 16 px images through the SR stage.
    small = images[:, ::2, ::2]
    sr = list(cascade.edit_batches(PROMPTS[:2], small[:2], start_stage=1, seed=0, batch_size=2))
    assert len(sr[0].images) == 1 and sr[0].images[0].shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="2 images for 3 prompts"):
        cascade.edit_batches(PROMPTS, images[:2])
    with pytest.raises(ValueError, match="strength must be in"):
        cascade.edit_batches(PROMPTS, images, strength=0.0)


def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)
    return str(path)


def test_edit_cli_inpaints_and_transforms_and_sample_super_resolves_your_images(stages, tmp_path, capsys):
    rng = np.random.default_rng(1)
    image = _png(tmp_path / "in.png", rng.integers(0, 256, (40, 48, 3), dtype=np.uint8))  # not square
    mask_array = np.zeros((40, 48), np.uint8)
    mask_array[10:30, 12:36] = 255
    mask_array[0, 0] = 100  # a gray pixel: kept (< 128)
    mask = _png(tmp_path / "mask.png", mask_array)
    workdirs = ["--workdir", stages["base"], "--workdir", stages["sr"]]
    out = tmp_path / "inpainted"
    code = main(
        ["edit", *workdirs, "--image", image, "--mask", mask, "--prompt", "a red circle", "--out", str(out)]
        + ["--resamples", "2", "--jump-length", "2", "--no-progress"]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert "in.png: 48x40, center-cropped to 40x40 and resized to 32x32 (the last stage's 32 px)" in err
    assert "mask.png: 1 gray pixels; white (>= 128) is generated, darker is kept" in err
    entry = json.loads((out / "manifest.jsonl").read_text())
    assert entry["prompt"] == "a red circle" and (out / entry["image"]).exists()
    assert sorted(os.listdir(out / "stages")) == ["0_base"]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["repaint"] == [2, 2] and settings["masks"] == [mask] and settings["strength"] == 1.0

    code = main(
        ["edit", *workdirs, "--image", image, "--strength", "0.5", "--prompt", "x", "--out", str(tmp_path / "i2i")]
    )
    assert code == 0 and (tmp_path / "i2i" / "manifest.jsonl").exists()

    small = _png(tmp_path / "small.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    code = main(
        [
            "sample",
            *workdirs,
            "--from-stage",
            "1",
            "--images",
            small,
            "--prompt",
            "a cat",
            "--out",
            str(tmp_path / "sr"),
        ]
        + ["--no-progress"]
    )
    assert code == 0
    entry = json.loads((tmp_path / "sr" / "manifest.jsonl").read_text())
    from PIL import Image

    assert Image.open(tmp_path / "sr" / entry["image"]).size == (32, 32)
    assert not (tmp_path / "sr" / "stages").exists()  # stage 1 is the last: no earlier stage to write


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image", "{img}", "--prompt", "x"], "nothing to edit: give --mask"),
        (["--image", "{img}", "--prompt", "x", "--strength", "1.5"], "--strength must be in (0, 1]"),
        (["--image", "{img}", "--mask", "{wide}", "--prompt", "x"], "give a mask of the image's size"),
        (["--image", "{img}", "--mask", "{black}", "--prompt", "x"], "has no white pixel: nothing to inpaint"),
        (["--image", "{root}/none.png", "--strength", "0.5", "--prompt", "x"], "does not exist"),
        (["--image", "{bad}", "--strength", "0.5", "--prompt", "x"], "pass a PNG or JPEG file"),
        (
            [
                "--image",
                "{img}",
                "--image",
                "{img}",
                "--strength",
                "0.5",
                "--prompt",
                "x",
                "--prompt",
                "y",
                "--prompt",
                "z",
            ],
            "give one prompt for all images or one per image (2), got 3",
        ),
        (
            ["--image", "{img}", "--strength", "0.5", "--resamples", "3", "--prompt", "x"],
            "--resamples is for inpainting",
        ),
    ],
)
def test_edit_cli_errors_name_the_fix(stages, tmp_path, args, message, capsys):
    names = {
        "img": _png(tmp_path / "img.png", np.zeros((16, 16, 3), np.uint8)),
        "wide": _png(tmp_path / "wide.png", np.full((16, 32), 255, np.uint8)),
        "black": _png(tmp_path / "black.png", np.zeros((16, 16), np.uint8)),
        "root": str(tmp_path),
    }
    (tmp_path / "bad.png").write_bytes(b"not an image")
    names["bad"] = str(tmp_path / "bad.png")
    args = [a.format(**names) for a in args]
    code = main(["edit", "--workdir", stages["base"], *args, "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("imagen-jax edit: error: ") and message in err and len(err.strip().splitlines()) == 1
