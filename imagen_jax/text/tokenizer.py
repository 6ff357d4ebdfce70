"""Tokenizers (through transformers) and fixed-length tokenization with a truncation warning."""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence

import numpy as np

from imagen_jax import storage

# Files of which at least one marks a directory as holding a saved Hugging Face tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model")
# Read with them when present (the model type, special tokens; a BPE tokenizer's vocabulary, e.g. CLIP's).
TOKENIZER_SIDE_FILES = ("config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt")


def byt5_tokenizer():
    """ByT5's byte-level tokenizer (UTF-8 bytes + 3 specials + 125 sentinels = 384 ids); needs no file."""
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


def word_tokenizer(words: Sequence[str]):
    """A word-level T5-style tokenizer built in memory (no file): NFKC, lowercase,
    punctuation dropped, split on whitespace; ids <pad>=0, </s>=1 (appended), <unk>=2,
    then `words`."""
    from tokenizers import (
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in words:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"[^\w\s]"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def load_tokenizer(checkpoint_dir: str):
    """The tokenizer saved beside a checkpoint (local or gs://), through transformers'
    AutoTokenizer, which reads local files: for gs:// the tokenizer's files (and config.json)
    are copied to a temporary folder first (a few MB)."""
    directory = storage.path(checkpoint_dir)
    if not any((directory / name).exists() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"No tokenizer in {checkpoint_dir!r} (looked for {', '.join(TOKENIZER_FILES)}). Save it beside the "
            "weights with `AutoTokenizer.from_pretrained(<original>).save_pretrained(dir)`."
        )
    from transformers import AutoTokenizer

    if not storage.is_remote(directory):
        return AutoTokenizer.from_pretrained(os.fspath(directory))
    with tempfile.TemporaryDirectory(prefix="imagen_jax_tokenizer_") as local:
        for name in (*TOKENIZER_FILES, *TOKENIZER_SIDE_FILES):
            if (directory / name).exists():
                storage.write_bytes(os.path.join(local, name), (directory / name).read_bytes())
        return AutoTokenizer.from_pretrained(local)


def tokenize(tokenizer, prompts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids [B, max_length] int32 and mask [B, max_length] bool, right-padded with pad ids.

    Prompts longer than max_length are truncated, keeping the end-of-sequence token as the
    last token (as Hugging Face's truncation does for T5), with one warning per call.
    """
    if isinstance(prompts, (str, bytes)):
        raise TypeError("tokenize expects a list of prompts, not a single string; wrap it: [prompt].")
    prompts = [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in prompts]
    token_lists = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id or 0
    ids = np.full((len(prompts), max_length), pad, np.int32)
    mask = np.zeros((len(prompts), max_length), bool)
    truncated = []
    for i, tokens in enumerate(token_lists):
        if len(tokens) > max_length:
            truncated.append((i, len(tokens)))
            tokens = tokens[: max_length - 1] + [eos] if eos is not None and tokens[-1] == eos else tokens[:max_length]
        ids[i, : len(tokens)] = tokens
        mask[i, : len(tokens)] = True
    if truncated:
        longest = max(n for _, n in truncated)
        warnings.warn(
            f"{len(truncated)} of {len(prompts)} prompts are longer than max_length={max_length} tokens "
            f"(longest: {longest}) and were truncated; raise the text encoder's max_length to keep them whole.",
            stacklevel=2,
        )
    return ids, mask
