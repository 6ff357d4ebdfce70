"""CLIP score: how well images match their captions (Hessel et al. 2021; the Imagen paper's
text-image alignment metric): 100 x cos(image embedding, text embedding), clipped at 0,
averaged over the pairs. Computed in float64 from the towers' projected embeddings."""

from __future__ import annotations

import numpy as np


def clip_scores(image_embeddings, text_embeddings) -> np.ndarray:
    """Per pair: max(100 cos(e_i, t_i), 0); embeddings [N, D] (any float dtype) -> float64 [N]."""
    a = np.asarray(image_embeddings, np.float64)
    b = np.asarray(text_embeddings, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"CLIP score pairs image i with caption i: got {a.shape} image and {b.shape} text embeddings.")
    cos = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.maximum(100.0 * cos, 0.0)


def clip_score(image_embeddings, text_embeddings) -> float:
    """The mean of clip_scores."""
    return float(np.mean(clip_scores(image_embeddings, text_embeddings)))
