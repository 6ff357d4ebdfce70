"""Hyperparameters of a T5 encoder stack, read from a Hugging Face config.json."""

from __future__ import annotations

import dataclasses
from typing import Any

# Activation names as Hugging Face spells them in `feed_forward_proj` ("relu", "gated-gelu", ...).
ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu", "swish")


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig:
    """Shape of a T5 encoder (design.md §2). Defaults are T5 1.0 small.

    feed_forward_proj: "relu" (T5 1.0: wi -> ReLU -> wo) or "gated-gelu" (T5 v1.1, Flan-T5,
    ByT5: gelu_tanh(wi_0 x) * wi_1 x -> wo); any "[gated-]<act>" of ACTIVATIONS.
    """

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"

    def __post_init__(self):
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated") or parts[-1] not in ACTIVATIONS:
            raise ValueError(
                f"feed_forward_proj={self.feed_forward_proj!r} is not supported; use 'relu', 'gated-gelu' "
                f"or '[gated-]<act>' with <act> one of {ACTIVATIONS}."
            )
        sizes = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets")
        for name in sizes:
            if getattr(self, name) <= 0:
                raise ValueError(f"T5EncoderConfig.{name} must be positive, got {getattr(self, name)}.")

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        """Hugging Face's activation name; "gated-gelu" means the tanh GELU ("gelu_new")."""
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_hf_dict(cls, hf_config: dict[str, Any]) -> T5EncoderConfig:
        """Encoder fields of a Hugging Face T5 or mT5 config.json (UMT5 has per-layer biases: unsupported)."""
        model_type = hf_config.get("model_type", "t5")
        if model_type not in ("t5", "mt5"):
            raise ValueError(
                f"config.json has model_type={model_type!r}; only T5-family encoders ('t5', 'mt5': T5 1.0, "
                "v1.1, Flan-T5, ByT5, mT5) are supported."
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf_config.items() if k in fields})

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json fields Hugging Face's T5EncoderModel needs to rebuild this encoder."""
        return {"model_type": "t5", "architectures": ["T5EncoderModel"], **dataclasses.asdict(self)}

    @property
    def num_params(self) -> int:
        """Parameter count (embedding included)."""
        d, inner = self.d_model, self.num_heads * self.d_kv
        ff = (3 if self.is_gated else 2) * d * self.d_ff
        per_layer = 4 * d * inner + ff + 2 * d
        bias_table = self.relative_attention_num_buckets * self.num_heads
        return self.vocab_size * d + bias_table + self.num_layers * per_layer + d


# Encoder shapes of the public T5 v1.1 checkpoints (google/t5-v1_1-*; Flan-T5 has the same
# shapes). Imagen uses XXL (design.md §2). Architectures only: weights come from the checkpoints.
T5_V1_1_CONFIGS: dict[str, T5EncoderConfig] = {
    f"t5-v1_1-{size}": T5EncoderConfig(
        vocab_size=32128,
        d_model=d_model,
        d_kv=64,
        d_ff=d_ff,
        num_layers=layers,
        num_heads=heads,
        feed_forward_proj="gated-gelu",
    )  # fmt: skip
    for size, d_model, d_ff, layers, heads in (
        ("small", 512, 1024, 8, 6),
        ("base", 768, 2048, 12, 12),
        ("large", 1024, 2816, 24, 16),
        ("xl", 2048, 5120, 24, 32),
        ("xxl", 4096, 10240, 24, 64),
    )
}
