"""FID and CLIP score of image files (local or gs://), over all devices: the networks
loaded once (`FidScorer`, `ClipScorer`), then any number of image sets scored."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from imagen_jax.eval.clip_score import clip_scores
from imagen_jax.eval.features import ShardedFeatures, all_features
from imagen_jax.eval.frechet import FeatureStatistics, StatisticsAccumulator, fid
from imagen_jax.eval.image_io import read_image


class FidScorer:
    """The FID Inception (pytorch-fid's weights file, `weights`) over all devices of `mesh`."""

    def __init__(self, weights: str, *, batch_size: int = 64, mesh=None, params=None):
        from imagen_jax.eval.inception import pool_features
        from imagen_jax.eval.inception_weights import fingerprint, load_inception_params

        params = load_inception_params(weights) if params is None else params
        self.weights, self.fingerprint = weights, fingerprint(params)
        self.extractor = ShardedFeatures(pool_features, params, batch_size=batch_size, mesh=mesh)

    def statistics(self, images: Sequence, *, load=read_image, progress: bool = True) -> FeatureStatistics:
        """Statistics of `images`: paths (read with `load`), or uint8 [H, W, 3] arrays with
        load=None."""
        accumulator = StatisticsAccumulator(2048)
        stream = self.extractor.stream(images, load or _same, description="FID features", progress=progress)
        for _, features in stream:
            accumulator.add(features)
        return accumulator.statistics({"images": len(images), "weights": self.fingerprint})

    def reference(self, reference: str, *, resolution: int, progress: bool = True, **dataset) -> tuple:
        """(statistics, where they are) for `reference`: an .npz of statistics, or a dataset
        name (its statistics computed once and saved beside it, reference.reference_statistics)."""
        from imagen_jax.eval.reference import reference_statistics

        if reference.endswith(".npz"):
            statistics = FeatureStatistics.load(reference)
            made_with = statistics.metadata.get("weights")
            if made_with and made_with != self.fingerprint:
                raise ValueError(
                    f"{reference!r} was computed with other Inception weights ({made_with}, these are "
                    f"{self.fingerprint}); recompute it with --reference DATASET."
                )
            return statistics, reference
        return reference_statistics(
            self.extractor, self.fingerprint, dataset=reference, resolution=resolution, progress=progress, **dataset
        )

    def score(self, images: Sequence, reference: FeatureStatistics, *, load=read_image, progress: bool = True) -> dict:
        statistics = self.statistics(images, load=load, progress=progress)
        return {"fid": fid(statistics, reference), "images": len(images), "reference_images": reference.count}


class ClipScorer:
    """CLIP's two towers (a Hugging Face CLIP checkpoint directory) over all devices."""

    def __init__(self, checkpoint: str, *, batch_size: int = 64, mesh=None):
        from imagen_jax.eval.clip_checkpoint import load_clip
        from imagen_jax.eval.clip_model import image_embeddings, text_embeddings

        self.checkpoint, self.clip = checkpoint, load_clip(checkpoint)
        config, params = self.clip.config, self.clip.params
        image_tower = functools.partial(_image_tower, image_embeddings, config)
        text_tower = functools.partial(_text_tower, text_embeddings, config)
        self.images = ShardedFeatures(image_tower, params, batch_size=batch_size, mesh=mesh)
        self.texts = ShardedFeatures(text_tower, params, batch_size=batch_size, mesh=mesh)

    def image_embeddings(self, images: Sequence, *, load=read_image, progress: bool = True) -> np.ndarray:
        """[N, projection_dim] of `images`: paths (read with `load`) or uint8 arrays (load=None)."""
        from imagen_jax.eval.clip_checkpoint import clip_preprocess

        read = load or _same
        prepare = lambda item: clip_preprocess(read(item)[None], self.clip)[0]  # noqa: E731
        return all_features(self.images, images, prepare, description="CLIP image features", progress=progress)

    def text_embeddings(self, prompts: Sequence[str]) -> np.ndarray:
        from imagen_jax.eval.clip_checkpoint import tokenize_clip

        ids, mask = tokenize_clip(self.clip, list(prompts))
        packed = np.stack([ids, mask.astype(ids.dtype)], axis=1)  # [N, 2, L]
        return all_features(self.texts, packed, lambda row: row, progress=False)

    def score(self, images: Sequence, prompts: Sequence[str], *, load=read_image, progress: bool = True) -> dict:
        if len(images) != len(prompts):
            raise ValueError(f"CLIP score pairs image i with prompt i: {len(images)} images, {len(prompts)} prompts.")
        embeddings = self.image_embeddings(images, load=load, progress=progress)
        scores = clip_scores(embeddings, self.text_embeddings(prompts))
        return {"clip_score": float(scores.mean()), "clip_score_std": float(scores.std()), "images": len(images)}


def _same(item):
    return item


def _image_tower(embed, config, params, pixels):
    return embed(params, config, pixels)


def _text_tower(embed, config, params, packed):
    return embed(params, config, packed[:, 0], packed[:, 1].astype(bool))
