"""Built-in text encoders for offline demos and tests: tiny T5 v1.1-style encoders with
weights drawn from a fixed seed. They have never been trained, so their embeddings carry
the prompt's tokens and positions but no learned language knowledge.

- "tiny-random-byt5": ByT5's byte tokenizer; any text.
- "tiny-random-t5-words": a word-level tokenizer over a small English vocabulary (the
  shapes dataset's words and common function words; anything else is <unk>). One token
  per word makes a color or shape one embedding for the UNet to find, not a run of
  bytes, so a stage learns to follow prompts in far fewer steps.
- "tiny-random-t5-words-ordered" (where the demo's pretrained encoder starts): the same, with the relative
  position biases drawn at std 1 instead of T5's d_model^-0.5. With T5's initialization
  every head's attention is nearly uniform, so a token's output does not say which words
  surround it: from the output of "white" in "a red circle on a white background", a
  linear probe tells background from object colors no better than always guessing
  "object" (74.7% against a 73.3% base rate, shapes captions). With std-1 biases each
  head favours a few relative offsets, and the same probe reads the role at 99.5%. So
  the UNet can tell which color is the object's and which the background's.
"""

from __future__ import annotations

import dataclasses

from imagen_jax.text.config import T5EncoderConfig

TINY_RANDOM_BYT5 = "tiny-random-byt5"
TINY_RANDOM_T5_WORDS = "tiny-random-t5-words"
TINY_RANDOM_T5_WORDS_ORDERED = "tiny-random-t5-words-ordered"

# Ids 0, 1, 2 are T5's <pad>, </s>, <unk>; then these words (lowercased prompts).
WORDS: tuple[str, ...] = (
    # shapes dataset: colors, shapes, sizes, positions, relations, template words
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "white",
    "gray",
    "black",
    "circle",
    "square",
    "triangle",
    "small",
    "medium",
    "large",
    "top",
    "bottom",
    "left",
    "right",
    "center",
    "middle",
    "above",
    "below",
    "background",
    "picture",
    "there",
    "is",
    "with",
    "on",
    "in",
    "at",
    "of",
    "to",
    "the",
    "a",
    "an",
    "and",
    # common words a user may add
    "grey",
    "brown",
    "cyan",
    "magenta",
    "big",
    "tiny",
    "huge",
    "circles",
    "squares",
    "triangles",
    "shape",
    "shapes",
    "object",
    "objects",
    "image",
    "photo",
    "drawing",
    "next",
    "near",
    "under",
    "over",
    "beside",
    "between",
    "corner",
    "side",
    "two",
    "one",
    "three",
    "no",
    "not",
    "empty",
    "plain",
)

# The shared architecture: 4 layers, d_model 256, gated-GELU (T5 v1.1); 2.6-2.7M parameters.
_TINY_T5 = T5EncoderConfig(
    vocab_size=384,  # ByT5Tokenizer's ids
    d_model=256,
    d_kv=64,
    d_ff=512,
    num_layers=4,
    num_heads=4,
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    feed_forward_proj="gated-gelu",
)

_WORDS_T5 = dataclasses.replace(_TINY_T5, vocab_size=128)  # vocab 128 >= 3 + len(WORDS), a multiple of 64


@dataclasses.dataclass(frozen=True)
class BuiltinEncoder:
    """A built-in encoder's recipe: its T5 config, the seed of its random weights, its
    tokenizer ("bytes" or "words"), and the std of its relative position biases (None:
    T5's initialization, d_model^-0.5)."""

    config: T5EncoderConfig
    seed: int
    tokenizer: str
    position_bias_std: float | None = None


BUILTIN_ENCODERS: dict[str, BuiltinEncoder] = {
    TINY_RANDOM_BYT5: BuiltinEncoder(_TINY_T5, 0, "bytes"),
    TINY_RANDOM_T5_WORDS: BuiltinEncoder(_WORDS_T5, 0, "words"),
    TINY_RANDOM_T5_WORDS_ORDERED: BuiltinEncoder(_WORDS_T5, 0, "words", position_bias_std=1.0),
}
