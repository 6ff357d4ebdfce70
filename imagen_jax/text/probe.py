"""Does a text encoder's output at a word say what role the word plays? A diagnostic for
the shapes grammar (docs/demo.md "The text encoder"): from the output at a color word alone,
a ridge-regression probe reads whether that word names the background (is followed by
"background") or an object. Used by the tests and benchmarks/text_role_probe.py."""

from __future__ import annotations

import numpy as np


def color_role_probe_accuracy(encoder, *, num_captions: int = 1200, seed: int = 0) -> tuple[float, float]:
    """(held-out accuracy of the probe, the base rate of always guessing the commoner role)
    over the color words of `num_captions` shapes captions (dataset seed `seed`): the probe
    is fitted on the first two thirds of the color words and scored on the rest."""
    from imagen_jax.data.shapes_scene import COLOR_NAMES, sample_scene

    captions = [sample_scene(seed, i).caption for i in range(num_captions)]
    embedding, _ = encoder.encode(captions)
    ids, _ = encoder.tokenize(captions)
    vocab = encoder.tokenizer.get_vocab()
    color_ids = np.array([vocab[c] for c in COLOR_NAMES])
    rows, cols = np.nonzero(np.isin(ids[:, :-1], color_ids))
    features = np.asarray(embedding)[rows, cols]
    labels = ids[rows, cols + 1] == vocab["background"]
    features = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    n = len(features) * 2 // 3
    w = np.linalg.solve(
        features[:n].T @ features[:n] + 1e-2 * np.eye(features.shape[1]),
        features[:n].T @ np.where(labels[:n], 1.0, -1.0),
    )
    return float(np.mean((features[n:] @ w > 0) == labels[n:])), float(max(labels.mean(), 1 - labels.mean()))
