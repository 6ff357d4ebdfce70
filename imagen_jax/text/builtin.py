"""The built-in default text encoder for offline demos and tests: a tiny T5 v1.1-style
encoder with ByT5's byte tokenizer and weights drawn from a fixed seed. It is named
"tiny-random-byt5" because that is what it is: it has never been trained, so its
embeddings carry the prompt's bytes and positions but no learned language knowledge.
"""

from __future__ import annotations

from imagen_jax.text.config import T5EncoderConfig

TINY_RANDOM_BYT5 = "tiny-random-byt5"

BUILTIN_ENCODERS: dict[str, tuple[T5EncoderConfig, int]] = {
    # name: (config, seed). vocab 384 = ByT5Tokenizer's ids; 2.7M parameters.
    TINY_RANDOM_BYT5: (
        T5EncoderConfig(
            vocab_size=384,
            d_model=256,
            d_kv=64,
            d_ff=512,
            num_layers=4,
            num_heads=4,
            relative_attention_num_buckets=32,
            relative_attention_max_distance=128,
            feed_forward_proj="gated-gelu",
        ),
        0,
    ),
}
