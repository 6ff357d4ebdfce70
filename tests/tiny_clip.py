"""A tiny random Hugging Face CLIP checkpoint written by the tests (no download): a CLIPModel
saved with save_pretrained beside a tiny CLIP BPE tokenizer built here."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MAX_LENGTH = 16
VOCAB_SIZE = 600  # > the tokenizer's ids, so that random ids above the EOS id test the pooling rule
WORDS = ("a", "photo", "of", "cat", "dog", "on", "mat")


def _bytes_to_unicode() -> list[str]:
    """GPT-2 / CLIP's printable character for each byte, in the order of CLIP's vocabulary."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _write_tokenizer_files(directory) -> None:
    """A tiny CLIP BPE vocabulary: every byte character and its </w> form, merges spelling WORDS,
    then <|startoftext|> and <|endoftext|> (the largest id, as in OpenAI's vocabulary)."""
    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges = []
    for word in WORDS:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.setdefault(pieces[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))


def save_tiny_clip(directory, *, hidden_act: str, legacy_eos: bool, preprocessor: dict | None, seed: int):
    """A tiny random CLIPModel + tokenizer (+ preprocessor_config.json) in `directory`; returns the torch model."""
    _write_tokenizer_files(directory)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    assert tokenizer.eos_token_id == max(tokenizer.get_vocab().values())
    text = dict(
        vocab_size=VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH, hidden_act=hidden_act, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=2 if legacy_eos else tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
        patch_size=8, hidden_act=hidden_act,
    )  # fmt: skip
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters and biases
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(directory))
    if preprocessor is not None:
        (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return model
