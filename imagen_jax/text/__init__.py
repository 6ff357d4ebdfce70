"""Text conditioning (design.md §2): a frozen T5 encoder in Flax that reads Hugging Face T5
checkpoints, its tokenizers, and the offline embedding cache."""

from imagen_jax.text.axes import LOGICAL_AXES
from imagen_jax.text.builtin import BUILTIN_ENCODERS, TINY_RANDOM_BYT5
from imagen_jax.text.config import T5EncoderConfig
from imagen_jax.text.embedding_cache import (
    EmbeddingCacheSource,
    embedding_cache_dir,
    write_embedding_cache,
)
from imagen_jax.text.encoder import (
    DEFAULT_MAX_LENGTH,
    TextEncoder,
    load_text_encoder,
    logical_param_shardings,
)
from imagen_jax.text.hf_checkpoint import load_hf_checkpoint, save_hf_checkpoint
from imagen_jax.text.t5 import T5Encoder, encode_tokens, init_params

__all__ = [
    "BUILTIN_ENCODERS",
    "DEFAULT_MAX_LENGTH",
    "EmbeddingCacheSource",
    "LOGICAL_AXES",
    "T5Encoder",
    "T5EncoderConfig",
    "TINY_RANDOM_BYT5",
    "TextEncoder",
    "embedding_cache_dir",
    "encode_tokens",
    "init_params",
    "load_hf_checkpoint",
    "load_text_encoder",
    "logical_param_shardings",
    "save_hf_checkpoint",
    "write_embedding_cache",
]
