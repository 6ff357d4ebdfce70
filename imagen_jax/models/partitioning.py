"""The logical axis vocabulary of the models, in one place.

Every parameter is created with `nn.with_logical_partitioning(init, names)` and the main
activations are pinned with `nn.with_logical_constraint(x, names)`. The names below are
the whole vocabulary; the training code maps them to mesh axes (data, fsdp) with the rules
of imagen_jax/parallel/rules.py (`DEFAULT_RULES`, or the config's `mesh.rules`). Outside a
mesh with rules the constraints are no-ops.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

# Parameter axes.
PARAM_AXES = {
    "embed": "channels of image features / image tokens in dense layers",
    "mlp": "width of the conditioning embedding (noise level + pooled text + aug level) and its MLPs",
    "heads": "attention heads",
    "kv": "channels per attention head",
    "text_embed": "width of the incoming text embedding (the T5 d_model)",
    "conv_in": "input channels of a convolution kernel",
    "conv_out": "output channels of a convolution kernel (and its bias)",
    "norm": "scale / bias of a GroupNorm or LayerNorm (small; kept replicated)",
    # None: the spatial dims of conv kernels, the q/k/v selector axis, the sinusoid input.
    # A name appears at most once per parameter (flax's rule).
}

# Activation axes.
ACTIVATION_AXES = {
    "batch": "examples",
    "height": "image rows",
    "width": "image columns",
    "channels": "feature channels of images, tokens and embedding vectors",
    "length": "text tokens",
}


def partitioned(init: Callable, *names: str | None) -> Callable:
    """An initializer whose parameter carries the logical axis `names` (one per dim)."""
    for name in names:
        if name is not None and name not in PARAM_AXES:
            raise ValueError(f"unknown logical parameter axis {name!r}; add it to PARAM_AXES in {__name__}")
    return nn.with_logical_partitioning(init, names)


def constrain(x, *names: str | None):
    """Pin activation `x` to the logical axes `names` (a no-op without mesh rules)."""
    return nn.with_logical_constraint(x, names)


def image_constraint(x):
    """x: [B, H, W, C] image features."""
    return constrain(x, "batch", "height", "width", "channels")
