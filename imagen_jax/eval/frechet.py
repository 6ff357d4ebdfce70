"""FID: Gaussian statistics of Inception features and the Frechet distance between them.

FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))  (Heusel et al. 2017), everything
in float64; the matrix square root is scipy's, with pytorch-fid's handling: if the product
is singular, eps is added to both diagonals; an imaginary part from rounding is dropped
when its diagonal is negligible, else it is an error.
"""

from __future__ import annotations

import dataclasses
import io
import json
import warnings

import numpy as np

from imagen_jax import storage


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
    """mean float64 [D], covariance float64 [D, D] (unbiased, as np.cov), count, and what
    made them (metadata: weights fingerprint, dataset, split, resolution...)."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int
    metadata: dict = dataclasses.field(default_factory=dict)

    def save(self, path: str) -> str:
        buffer = io.BytesIO()
        np.savez(
            buffer,
            mu=self.mean,
            sigma=self.covariance,
            count=np.int64(self.count),
            metadata=np.array(json.dumps(self.metadata, sort_keys=True)),
        )
        return storage.write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str) -> FeatureStatistics:
        """Our .npz, or any .npz with pytorch-fid's `mu` and `sigma` (e.g. its --save-stats)."""
        with np.load(io.BytesIO(storage.path(path).read_bytes())) as data:
            if not {"mu", "sigma"} <= set(data.files):
                raise ValueError(f"{path!r} holds {data.files}; FID statistics need 'mu' and 'sigma'.")
            metadata = json.loads(str(data["metadata"])) if "metadata" in data.files else {}
            count = int(data["count"]) if "count" in data.files else 0
            return cls(np.asarray(data["mu"], np.float64), np.asarray(data["sigma"], np.float64), count, metadata)


class StatisticsAccumulator:
    """Streaming mean and covariance of feature batches, in float64: sums of x and of x x^T
    over the batches seen (any batch size, any order)."""

    def __init__(self, dim: int):
        self.count = 0
        self._sum = np.zeros(dim, np.float64)
        self._outer = np.zeros((dim, dim), np.float64)

    def add(self, features: np.ndarray) -> None:
        """features [N, D] (any float dtype)."""
        x = np.asarray(features, np.float64)
        self.count += x.shape[0]
        self._sum += x.sum(axis=0)
        self._outer += x.T @ x

    def statistics(self, metadata: dict | None = None) -> FeatureStatistics:
        if self.count < 2:
            raise ValueError(f"FID statistics need at least 2 images, got {self.count}.")
        mean = self._sum / self.count
        covariance = (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)
        return FeatureStatistics(mean, covariance, self.count, dict(metadata or {}))


def feature_statistics(features: np.ndarray, metadata: dict | None = None) -> FeatureStatistics:
    """Statistics of features [N, D] held in memory."""
    accumulator = StatisticsAccumulator(np.shape(features)[1])
    accumulator.add(features)
    return accumulator.statistics(metadata)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """The Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), float64."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(
            f"Statistics of different feature sizes: mean {mu1.shape} vs {mu2.shape}, covariance "
            f"{sigma1.shape} vs {sigma2.shape}; compute both with the same network."
        )
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product (fewer images than dimensions) is handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            imaginary = np.max(np.abs(covmean.imag))
            raise ValueError(
                f"FID: the covariance product's square root has an imaginary part of {imaginary:.3g}; "
                "use more images than feature dimensions."
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """FID between two sets of statistics."""
    return frechet_distance(a.mean, a.covariance, b.mean, b.covariance)
