"""The tiny T5 pretrained on the shapes grammar (text.pretrain): BERT's masking, a
deterministic run that learns, and a checkpoint that loads through the Hugging Face path
(`load_text_encoder(dir)`, as a real T5) with the same params and the same tokenizer."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imagen_jax.text import encoder as encoder_module
from imagen_jax.text.builtin import WORDS
from imagen_jax.text.encoder import encoder_name, load_text_encoder
from imagen_jax.text.pretrain import (
    DONE_FILE,
    PRETRAINED_SHAPES_T5,
    PretrainSettings,
    ensure_pretrained,
    mask_words,
    pretrain,
    shapes_corpus,
)
from imagen_jax.text.probe import color_role_probe_accuracy
from imagen_jax.text.t5 import encode_tokens
from imagen_jax.text.tokenizer import tokenize, word_tokenizer

TINY = PretrainSettings(steps=40, batch_size=16, corpus_size=400, heldout_size=64, warmup_steps=5)


@pytest.fixture(scope="module")
def tiny_run():
    return pretrain(TINY, progress=False)


def test_masking_chooses_words_only_at_bert_rates():
    ids, mask = tokenize(word_tokenizer(WORDS), shapes_corpus(3, 2000), 24)
    inputs, chosen = mask_words(jax.random.key(0), ids, mask, rate=0.15, mask_id=127, num_words=len(WORDS))
    inputs, chosen = np.asarray(inputs), np.asarray(chosen)
    words = mask & (ids >= 3)
    assert not (chosen & ~words).any()  # never </s>, <pad> or <unk>
    assert chosen.any(axis=1).all()  # every caption has a word to predict
    assert 0.14 < chosen.sum() / words.sum() < 0.22  # 15%, plus the one forced in short captions
    masked = (inputs == 127)[chosen].mean()
    kept = (inputs == ids)[chosen].mean()  # 10% kept, and random words that hit the same word
    assert 0.77 < masked < 0.83 and 0.09 < kept < 0.13
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])


def test_pretraining_is_deterministic_and_learns(tiny_run):
    params, metrics = tiny_run
    again, metrics_again = pretrain(TINY, progress=False)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
        np.testing.assert_array_equal(a, b)
    assert {k: v for k, v in metrics.items() if k != "seconds"} == {
        k: v for k, v in metrics_again.items() if k != "seconds"
    }
    # ln(128) = 4.85 at the start: the grammar's words are being learned within 40 steps.
    assert metrics["loss_last_tenth"] < metrics["loss_first_tenth"] - 1.0
    ids, mask = tokenize(word_tokenizer(WORDS), shapes_corpus(TINY.corpus_seed, TINY.heldout_size, "test"), 24)
    words = ids[mask & (ids >= 3)]
    always_the_commonest_word = np.bincount(words).max() / len(words)  # 0.19
    assert metrics["heldout_masked_word_accuracy"] > always_the_commonest_word + 0.03


def test_checkpoint_loads_through_the_hf_path_with_the_same_params(tiny_run, tmp_path):
    params, _ = tiny_run
    folder = str(tmp_path / "t5")
    ensure_pretrained(folder, TINY, progress=False)
    done = json.loads((tmp_path / "t5" / DONE_FILE).read_text())
    assert done["settings"]["steps"] == TINY.steps and "heldout_masked_word_accuracy" in done["metrics"]

    encoder = load_text_encoder(folder, max_length=24, param_dtype=jnp.float32, dtype=jnp.float32)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(jax.device_get(encoder.params))):
        np.testing.assert_array_equal(a, b)
    prompts = ["a red circle on a white background", "a small blue square to the left of a green triangle"]
    ids, mask = encoder.tokenize(prompts)
    expected_ids, expected_mask = tokenize(word_tokenizer(WORDS), prompts, 24)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)
    # The pretrained outputs still say a color word's role (the masked LM alone erased it).
    accuracy, base_rate = color_role_probe_accuracy(encoder)
    assert accuracy > 0.95 > base_rate + 0.2, (accuracy, base_rate)  # masked LM alone, full run: 0.72
    embeddings, _ = encoder.encode(prompts)
    reference = encode_tokens(params, ids, mask, config=TINY.config)
    np.testing.assert_allclose(np.asarray(embeddings), np.asarray(reference), atol=2e-5)  # jit vs eager

    # Complete: not redone. Other settings: redone.
    stamp = (tmp_path / "t5" / "model.safetensors").stat().st_mtime_ns
    ensure_pretrained(folder, TINY, progress=False)
    assert (tmp_path / "t5" / "model.safetensors").stat().st_mtime_ns == stamp
    ensure_pretrained(folder, dataclasses.replace(TINY, steps=2, warmup_steps=1), progress=False)
    assert json.loads((tmp_path / "t5" / DONE_FILE).read_text())["settings"]["steps"] == 2


def test_the_builtin_name_is_pretrained_once_into_the_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEN_JAX_DATA_DIR", str(tmp_path))
    tiny = dataclasses.replace(TINY, steps=2, warmup_steps=1)
    monkeypatch.setattr(encoder_module, "ensure_pretrained", lambda folder: ensure_pretrained(folder, tiny))
    encoder = load_text_encoder(PRETRAINED_SHAPES_T5, max_length=24)
    assert encoder.name == encoder_name(PRETRAINED_SHAPES_T5) == PRETRAINED_SHAPES_T5  # names its embedding cache
    assert (tmp_path / "text_encoders" / PRETRAINED_SHAPES_T5 / DONE_FILE).exists()
