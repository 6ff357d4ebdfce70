"""Parity of our Flax T5 encoder with transformers' PyTorch T5EncoderModel (float32, CPU).

Tiny random T5 1.0 (relu), v1.1 (gated-gelu) and ByT5 models are written with
`save_pretrained` and read back by our loader. These tests need torch: they skip without
it, unless IMAGEN_JAX_REQUIRE_TORCH=1 (CI), where a missing torch fails them.
"""

import os

import numpy as np
import pytest

from imagen_jax.text import T5Encoder, load_hf_checkpoint, load_text_encoder

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def torch_and_transformers():
    try:
        import torch
    except ImportError:
        if os.environ.get("IMAGEN_JAX_REQUIRE_TORCH") == "1":
            pytest.fail("IMAGEN_JAX_REQUIRE_TORCH=1 but torch is not installed: pip install -e '.[test]'.")
        pytest.skip("torch is not installed (pip install -e '.[test]' installs it).")
    import transformers

    torch.manual_seed(0)
    return torch, transformers


def _hf_config(transformers, **overrides):
    fields = dict(
        vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
    )  # fmt: skip
    return transformers.T5Config(**{**fields, **overrides})


def _padded_batch(vocab_size, length=24):
    """Token ids [3, length] with three different amounts of right padding (pad id 0, EOS id 1)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(2, vocab_size, size=(3, length)).astype(np.int32)
    mask = np.arange(length)[None, :] < np.array([length, 17, 5])[:, None]
    ids[np.arange(3), mask.sum(1) - 1] = 1
    return np.where(mask, ids, 0), mask


def _reference(torch, model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
    return out.last_hidden_state.numpy()


@pytest.mark.parametrize(
    "feed_forward_proj,model_class,save_kwargs",
    [
        ("relu", "T5ForConditionalGeneration", {}),  # T5 1.0; full checkpoint, decoder weights skipped
        ("gated-gelu", "T5EncoderModel", {"max_shard_size": "20KB"}),  # T5 v1.1 / Flan-T5; sharded index
    ],
)
def test_matches_transformers(torch_and_transformers, tmp_path, feed_forward_proj, model_class, save_kwargs):
    torch, transformers = torch_and_transformers
    model = getattr(transformers, model_class)(_hf_config(transformers, feed_forward_proj=feed_forward_proj)).eval()
    model.save_pretrained(tmp_path, **save_kwargs)
    if save_kwargs:
        assert (tmp_path / "model.safetensors.index.json").is_file()

    config, params = load_hf_checkpoint(str(tmp_path))
    ids, mask = _padded_batch(config.vocab_size)
    encoder = model.encoder if model_class == "T5ForConditionalGeneration" else model
    expected = _reference(torch, encoder, ids, mask)
    ours = np.asarray(T5Encoder(config).apply({"params": params}, ids, mask))
    assert np.abs(ours - expected).max() <= TOLERANCE


def test_byt5_matches_transformers_through_text_encoder(torch_and_transformers, tmp_path):
    """ByT5: checkpoint + tokenizer directory -> load_text_encoder -> encode(prompts)."""
    torch, transformers = torch_and_transformers
    model = transformers.T5EncoderModel(_hf_config(transformers, vocab_size=384, feed_forward_proj="gated-gelu")).eval()
    model.save_pretrained(tmp_path)
    transformers.ByT5Tokenizer().save_pretrained(tmp_path)

    encoder = load_text_encoder(str(tmp_path), max_length=32, dtype=np.float32)
    prompts = ["a red circle above a blue square", "two green triangles", "ß 🙂"]
    with pytest.warns(UserWarning, match="1 of 3 prompts are longer than max_length=32"):
        embeddings, mask = encoder.encode(prompts)
    with pytest.warns(UserWarning, match="truncated"):
        ids, _ = encoder.tokenize(prompts)
    embeddings, mask = np.array(embeddings), np.array(mask)

    reference_tokenizer = transformers.ByT5Tokenizer()
    batch = reference_tokenizer(prompts, padding="max_length", truncation=True, max_length=32, return_tensors="np")
    np.testing.assert_array_equal(ids, batch["input_ids"])  # same truncation (EOS kept)
    np.testing.assert_array_equal(mask, batch["attention_mask"].astype(bool))
    assert mask[0].all() and not mask[1:].all()  # one truncated prompt, two padded ones
    expected = _reference(torch, model, batch["input_ids"], mask)
    assert np.abs(np.where(mask[..., None], expected, 0.0) - embeddings).max() <= TOLERANCE
    assert np.all(embeddings[~mask] == 0.0)


def test_reads_pytorch_bin(torch_and_transformers, tmp_path):
    """pytorch_model.bin (read with torch.load(weights_only=True)) gives the same params as safetensors."""
    torch, transformers = torch_and_transformers
    model = transformers.T5EncoderModel(_hf_config(transformers)).eval()
    model.save_pretrained(tmp_path / "safetensors")
    (tmp_path / "bin").mkdir()
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "safetensors" / "config.json").read_text())

    _, from_safetensors = load_hf_checkpoint(str(tmp_path / "safetensors"))
    _, from_bin = load_hf_checkpoint(str(tmp_path / "bin"))
    import jax

    jax.tree.map(np.testing.assert_array_equal, from_safetensors, from_bin)


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16), (64, 256)])
def test_relative_position_buckets_match_transformers(torch_and_transformers, num_buckets, max_distance):
    from imagen_jax.text.t5 import relative_position_bucket

    torch, transformers = torch_and_transformers
    relative = np.arange(-600, 601)
    expected = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        torch.from_numpy(relative), bidirectional=True, num_buckets=num_buckets, max_distance=max_distance
    ).numpy()
    ours = np.asarray(relative_position_bucket(relative, num_buckets=num_buckets, max_distance=max_distance))
    np.testing.assert_array_equal(ours, expected)
    assert len(np.unique(ours)) == num_buckets - 1  # every bucket but "0 tokens after", which cannot occur
