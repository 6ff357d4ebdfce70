"""Logical axis names of the T5 encoder, in one place (design.md §7: parameters carry logical
axis names; the training config maps them to mesh axes with flax's logical axis rules).

Parameters use the first six names; activations use 'batch', 'length' and 'embed'.
"""

LOGICAL_AXES: dict[str, str] = {
    "embed": "model width d_model (token embeddings, hidden states, layer-norm scales)",
    "mlp": "feed-forward width d_ff",
    "heads": "attention heads",
    "kv": "per-head query/key/value width d_kv",
    "vocab": "token vocabulary",
    "relpos": "relative-position buckets of the shared attention bias",
    "batch": "prompts in a batch (activations only)",
    "length": "token positions (activations only)",
}

# Activation layout of every hidden state [B, L, D].
HIDDEN_AXES = ("batch", "length", "embed")
