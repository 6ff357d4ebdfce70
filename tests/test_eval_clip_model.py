"""Our Flax CLIP (imagen_jax.eval.clip_model / clip_checkpoint) against Hugging Face transformers'
CLIPModel, CLIPTokenizer and CLIPImageProcessor (PIL backend) on tiny random checkpoints saved
with save_pretrained (no download): image and text embeddings, tokenization, preprocessing,
parameter counts of the ViT-B/32 and ViT-L/14 presets, and the missing-weight error."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from tiny_clip import MAX_LENGTH, VOCAB_SIZE, save_tiny_clip  # noqa: E402

from imagen_jax import storage  # noqa: E402
from imagen_jax.eval import clip_checkpoint, clip_model  # noqa: E402
from imagen_jax.eval.clip_checkpoint import clip_preprocess, load_clip, tokenize_clip  # noqa: E402
from imagen_jax.eval.clip_model import ClipConfig, image_embeddings, text_embeddings  # noqa: E402

PROMPTS = ["a photo of a cat", "A dog!", "", "a cat on a mat " * 4, "photo of a dog, a cat and a mat"]

image_embeddings_jit = jax.jit(image_embeddings, static_argnums=1)
text_embeddings_jit = jax.jit(text_embeddings, static_argnums=1)


@pytest.fixture(scope="module")
def quick_gelu(tmp_path_factory):
    """OpenAI-style: quick_gelu, legacy eos_token_id=2 (pooling at the argmax id), no preprocessor config."""
    directory = tmp_path_factory.mktemp("clip_quick_gelu")
    return directory, save_tiny_clip(directory, hidden_act="quick_gelu", legacy_eos=True, preprocessor=None, seed=0)


@pytest.fixture(scope="module")
def gelu(tmp_path_factory):
    """A fresh config: gelu, eos_token_id = the tokenizer's (pooling at the first EOS), resize 36 / crop 32."""
    directory = tmp_path_factory.mktemp("clip_gelu")
    preprocessor = {
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 36},
        "crop_size": {"height": 32, "width": 32}, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3],
        "resample": 3, "do_resize": True, "do_center_crop": True, "do_rescale": True, "do_normalize": True,
        "rescale_factor": 1 / 255,
    }  # fmt: skip
    return directory, save_tiny_clip(directory, hidden_act="gelu", legacy_eos=False, preprocessor=preprocessor, seed=1)


@pytest.fixture(scope="module", params=["quick_gelu", "gelu"])
def checkpoint(request):
    directory, model = request.getfixturevalue(request.param)
    return directory, model, load_clip(str(directory))


def _relative_error(ours, reference) -> tuple[float, float]:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    diff = float(np.max(np.abs(ours - reference)))
    return diff, diff / float(np.max(np.abs(reference)))


def test_image_embeddings_match_transformers(checkpoint):
    _, model, clip = checkpoint
    pixels = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)  # NCHW
    with torch.no_grad():
        reference = model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output.numpy()
    ours = image_embeddings_jit(clip.params, clip.config, pixels.transpose(0, 2, 3, 1))
    assert ours.shape == (3, 24) and ours.dtype == jnp.float32
    diff, relative = _relative_error(ours, reference)
    assert relative < 1e-5, (diff, relative)


def test_text_embeddings_match_transformers(checkpoint):
    _, model, clip = checkpoint
    ids, mask = tokenize_clip(clip, PROMPTS)
    # Random ids (some above the EOS id) with an EOS at a random place and right padding after it.
    rng = np.random.default_rng(1)
    eos = clip.tokenizer.eos_token_id
    random_ids = rng.integers(0, VOCAB_SIZE, (4, MAX_LENGTH)).astype(np.int32)
    random_ids[random_ids == eos] = 0
    random_mask = np.ones_like(random_ids, bool)
    for i, (at, length) in enumerate([(3, 9), (15, 16), (0, 4), (6, 6 + 1)]):
        random_ids[i, at], random_mask[i, length:] = eos, False
    for ids, mask in ((ids, mask), (random_ids, random_mask)):
        with torch.no_grad():
            reference = model.get_text_features(
                input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long()
            ).pooler_output.numpy()
        ours = text_embeddings_jit(clip.params, clip.config, ids, mask)
        assert ours.shape == (len(ids), 24) and ours.dtype == jnp.float32
        diff, relative = _relative_error(ours, reference)
        assert relative < 1e-5, (diff, relative)


def test_eos_pooling_rule():
    """transformers' rule: argmax of the ids for eos_token_id == 2, else the first position of eos_token_id."""
    ids = jnp.array([[5, 9, 7, 9, 9], [1, 7, 7, 3, 9]])
    np.testing.assert_array_equal(clip_model.eos_positions(ids, 2), [1, 4])
    np.testing.assert_array_equal(clip_model.eos_positions(ids, 7), [2, 1])


def test_tokenize_clip_matches_tokenizer(quick_gelu):
    directory, _ = quick_gelu
    clip = load_clip(str(directory))
    hf = transformers.AutoTokenizer.from_pretrained(str(directory))
    ids, mask = tokenize_clip(clip, PROMPTS)
    assert ids.shape == mask.shape == (len(PROMPTS), MAX_LENGTH) and ids.dtype == np.int32 and mask.dtype == bool
    padded = hf(PROMPTS, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    np.testing.assert_array_equal(ids, padded["input_ids"])
    np.testing.assert_array_equal(mask, padded["attention_mask"].astype(bool))
    for row, tokens in zip(ids, hf(PROMPTS)["input_ids"]):
        assert tokens[0] == hf.bos_token_id and tokens[-1] == hf.eos_token_id
        kept = tokens if len(tokens) <= MAX_LENGTH else tokens[: MAX_LENGTH - 1] + tokens[-1:]
        np.testing.assert_array_equal(row[: len(kept)], kept)
        assert (row[len(kept) :] == hf.pad_token_id).all()
    assert max(len(t) for t in hf(PROMPTS)["input_ids"]) > MAX_LENGTH  # truncation is exercised


def test_clip_preprocess_matches_image_processor(quick_gelu, gelu):
    """Against transformers' PIL-backend CLIPImageProcessor (its torchvision backend resizes differently, by
    up to ~0.015 here), on non-square images; quick_gelu's checkpoint has no preprocessor config (OpenAI's
    defaults), gelu's resizes to 36 before cropping 32 and has its own mean / std."""
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((45, 70, 3), (61, 33, 3), (32, 32, 3))]
    for directory, _ in (quick_gelu, gelu):
        if (directory / "preprocessor_config.json").exists():
            processor = transformers.CLIPImageProcessorPil.from_pretrained(str(directory))
        else:
            processor = transformers.CLIPImageProcessorPil(
                size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
            )
        reference = np.concatenate([processor(images=[im], return_tensors="np")["pixel_values"] for im in images])
        clip = load_clip(str(directory))
        ours = np.concatenate([clip_preprocess(im[None], clip) for im in images])
        assert ours.shape == (3, 32, 32, 3) and ours.dtype == np.float32
        np.testing.assert_allclose(ours, reference.transpose(0, 2, 3, 1), atol=1e-5, rtol=0)
        np.testing.assert_array_equal(clip_preprocess(images, clip), ours)  # a list of sizes works too


def test_config_from_hf_dict(gelu, quick_gelu):
    for (directory, model), act in ((gelu, "gelu"), (quick_gelu, "quick_gelu")):
        config = ClipConfig.from_hf_dict(json.loads((directory / "config.json").read_text()))
        assert config.text.hidden_act == config.vision.hidden_act == act
        assert config.text.eos_token_id == model.config.text_config.eos_token_id
        assert (config.vision.image_size, config.vision.patch_size, config.projection_dim) == (32, 8, 24)
        assert config.text.max_position_embeddings == MAX_LENGTH and config.text.vocab_size == VOCAB_SIZE
        hash(config)
    legacy = {"text_config": {"hidden_size": 16}, "text_config_dict": {"hidden_size": 64, "num_attention_heads": 4}}
    assert ClipConfig.from_hf_dict(legacy).text.hidden_size == 64
    assert ClipConfig.from_hf_dict({}) == clip_model.CLIP_VIT_B32


@pytest.mark.parametrize(
    "name, known_total", [("ViT-B/32", 151_277_313), ("ViT-L/14", 427_616_513)], ids=["B32", "L14"]
)
def test_preset_parameter_counts(name, known_total):
    preset = clip_model.PRESETS[name]
    hf_config = transformers.CLIPConfig(
        text_config=preset.to_hf_dict()["text_config"],
        vision_config=preset.to_hf_dict()["vision_config"],
        projection_dim=preset.projection_dim,
    )
    with torch.device("meta"):
        model = transformers.CLIPModel(hf_config)
    hf_total = sum(p.numel() for p in model.parameters())
    # transformers counts logit_scale (1 parameter), which our model does not keep.
    assert clip_model.num_params(preset) == hf_total - 1
    assert hf_total == known_total


def test_missing_and_unexpected_weights_are_named(quick_gelu, tmp_path):
    from safetensors.numpy import save_file

    directory, model = quick_gelu
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    del state["vision_model.encoder.layers.1.mlp.fc2.bias"]
    state["vision_model.extra.weight"] = np.zeros(3, np.float32)
    save_file(state, str(tmp_path / "model.safetensors"))
    for name in ("config.json", "vocab.json", "merges.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((directory / name).read_bytes())
    with pytest.raises(
        ValueError, match=r"missing weights \(1\): vision_model\.encoder\.layers\.1\.mlp\.fc2\.bias"
    ) as e:
        load_clip(str(tmp_path))
    assert "unexpected weights (1): vision_model.extra.weight" in str(e.value)


def test_load_from_gcs(gcs, gelu):
    """load_clip reads a gs:// checkpoint (weights, config, tokenizer files, preprocessor config)."""
    directory, _ = gelu
    remote = gcs.uri("clip_tiny")
    for file in directory.iterdir():
        storage.write_bytes(storage.join(remote, file.name), file.read_bytes())
    clip, local = load_clip(remote), load_clip(str(directory))
    assert clip.config == local.config and clip.resize_size == 36 and clip.image_mean == (0.5, 0.4, 0.3)
    jax.tree.map(np.testing.assert_array_equal, clip.params, local.params)
    np.testing.assert_array_equal(tokenize_clip(clip, PROMPTS)[0], tokenize_clip(local, PROMPTS)[0])
    assert clip_checkpoint.Clip.__dataclass_params__.frozen
