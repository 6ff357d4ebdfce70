"""The FID network: InceptionV3 as TensorFlow's FID code and pytorch-fid run it, in Flax.

Architecture of Szegedy et al. 2016 ("Rethinking the Inception Architecture"), with the
changes of the 2015-12-05 TensorFlow graph that FID is defined on (Heusel et al. 2017):
the pool branches of the A, C and first E blocks average without counting padding, the
last E block max-pools, and the classifier has 1008 classes (unused here). Inputs are
resized bilinearly to 299 x 299 (no antialiasing, half-pixel centres: torch's
F.interpolate(align_corners=False)) and scaled to [-1, 1]; the output is the 2048-d
average pool. Module and parameter names follow torchvision's (Mixed_5b/branch1x1/conv),
so pytorch-fid's weight file maps one to one (inception_weights.py).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
MIN_SIZE = 75  # the smallest input the network accepts (its params do not depend on the size)
FEATURE_DIM = 2048
BATCH_NORM_EPS = 1e-3
HIGHEST = jax.lax.Precision.HIGHEST


class BasicConv(nn.Module):
    """Conv (no bias) -> batch norm with running statistics -> ReLU; NHWC.
    Params: conv/kernel [kh, kw, in, out]; bn/{scale, bias, mean, var} [out]."""

    features: int
    kernel: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)

    @nn.compact
    def __call__(self, x):
        kernel = self.param(
            "kernel", nn.initializers.he_normal(), (*self.kernel, x.shape[-1], self.features), jnp.float32
        )
        y = jax.lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            window_strides=(self.strides, self.strides),
            padding=[(p, p) for p in self.padding],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=HIGHEST,
        )
        bn = {name: self.param(name, init, (self.features,), jnp.float32) for name, init in _BN_PARAMS}
        scale = bn["scale"] * jax.lax.rsqrt(bn["var"] + BATCH_NORM_EPS)
        return nn.relu((y - bn["mean"]) * scale + bn["bias"])


_BN_PARAMS = (
    ("scale", nn.initializers.ones),
    ("bias", nn.initializers.zeros),
    ("mean", nn.initializers.zeros),
    ("var", nn.initializers.ones),
)


def _conv(features, kernel, strides=1, padding=(0, 0), name=None):
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    padding = (padding, padding) if isinstance(padding, int) else padding
    return BasicConv(features, kernel, strides, padding, name=name)


def _avg_pool_same(x):
    """3x3 stride-1 average over the valid (unpadded) pixels only, as TensorFlow's."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, strides=2, padding="VALID"):
    return nn.max_pool(x, (3, 3), strides=(strides, strides), padding=padding)


class InceptionA(nn.Module):
    pool_features: int

    @nn.compact
    def __call__(self, x):
        b1 = _conv(64, 1, name="branch1x1")(x)
        b5 = _conv(64, 5, padding=2, name="branch5x5_2")(_conv(48, 1, name="branch5x5_1")(x))
        b3 = _conv(64, 1, name="branch3x3dbl_1")(x)
        b3 = _conv(96, 3, padding=1, name="branch3x3dbl_3")(_conv(96, 3, padding=1, name="branch3x3dbl_2")(b3))
        pool = _conv(self.pool_features, 1, name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([b1, b5, b3, pool], axis=-1)


class InceptionB(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = _conv(384, 3, strides=2, name="branch3x3")(x)
        d = _conv(64, 1, name="branch3x3dbl_1")(x)
        d = _conv(96, 3, padding=1, name="branch3x3dbl_2")(d)
        d = _conv(96, 3, strides=2, name="branch3x3dbl_3")(d)
        return jnp.concatenate([b3, d, _max_pool(x)], axis=-1)


class InceptionC(nn.Module):
    channels_7x7: int

    @nn.compact
    def __call__(self, x):
        c7 = self.channels_7x7
        b1 = _conv(192, 1, name="branch1x1")(x)
        b7 = _conv(c7, 1, name="branch7x7_1")(x)
        b7 = _conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
        b7 = _conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
        d = _conv(c7, 1, name="branch7x7dbl_1")(x)
        d = _conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(d)
        d = _conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(d)
        d = _conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(d)
        d = _conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(d)
        pool = _conv(192, 1, name="branch_pool")(_avg_pool_same(x))
        return jnp.concatenate([b1, b7, d, pool], axis=-1)


class InceptionD(nn.Module):
    @nn.compact
    def __call__(self, x):
        b3 = _conv(320, 3, strides=2, name="branch3x3_2")(_conv(192, 1, name="branch3x3_1")(x))
        b7 = _conv(192, 1, name="branch7x7x3_1")(x)
        b7 = _conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = _conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = _conv(192, 3, strides=2, name="branch7x7x3_4")(b7)
        return jnp.concatenate([b3, b7, _max_pool(x)], axis=-1)


class InceptionE(nn.Module):
    """`max_pool`: the FID graph's last block max-pools its pool branch (the first averages)."""

    max_pool: bool

    @nn.compact
    def __call__(self, x):
        b1 = _conv(320, 1, name="branch1x1")(x)
        b3 = _conv(384, 1, name="branch3x3_1")(x)
        b3 = jnp.concatenate(
            [
                _conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                _conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3),
            ],
            axis=-1,
        )
        d = _conv(448, 1, name="branch3x3dbl_1")(x)
        d = _conv(384, 3, padding=1, name="branch3x3dbl_2")(d)
        d = jnp.concatenate(
            [
                _conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(d),
                _conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(d),
            ],
            axis=-1,
        )
        pooled = _max_pool(x, strides=1, padding=((1, 1), (1, 1))) if self.max_pool else _avg_pool_same(x)
        pool = _conv(192, 1, name="branch_pool")(pooled)
        return jnp.concatenate([b1, b3, d, pool], axis=-1)


class FIDInceptionV3(nn.Module):
    """[N, 299, 299, 3] float in [-1, 1] -> [N, 2048] pool features (float32)."""

    @nn.compact
    def __call__(self, x):
        x = _conv(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
        x = _conv(32, 3, name="Conv2d_2a_3x3")(x)
        x = _max_pool(_conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x))
        x = _conv(80, 1, name="Conv2d_3b_1x1")(x)
        x = _max_pool(_conv(192, 3, name="Conv2d_4a_3x3")(x))
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features, name=name)(x)
        x = InceptionB(name="Mixed_6a")(x)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(c7, name=name)(x)
        x = InceptionD(name="Mixed_7a")(x)
        x = InceptionE(max_pool=False, name="Mixed_7b")(x)
        x = InceptionE(max_pool=True, name="Mixed_7c")(x)
        return jnp.mean(x, axis=(1, 2))


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out, in] float32 weights of 1-D bilinear resizing with half-pixel centres and no
    antialiasing, exactly torch's F.interpolate(mode='bilinear', align_corners=False):
    source = max((i + 0.5) * in / out - 0.5, 0), interpolated between its two neighbours."""
    source = np.maximum((np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5, 0.0)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    frac = source - low
    matrix = np.zeros((out_size, in_size), np.float64)
    np.add.at(matrix, (np.arange(out_size), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(out_size), high), frac)
    return matrix.astype(np.float32)


def inception_inputs(images: jax.Array) -> jax.Array:
    """uint8 [N, H, W, 3] (or float in [0, 1]) -> float32 [N, 299, 299, 3] in [-1, 1]: the FID
    protocol's bilinear resize (bilinear_matrix) then 2x - 1."""
    x = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)
    rows = jnp.asarray(bilinear_matrix(x.shape[1], INPUT_SIZE))
    cols = jnp.asarray(bilinear_matrix(x.shape[2], INPUT_SIZE))
    x = jnp.einsum("oh,nhwc->nowc", rows, x, precision=HIGHEST)
    x = jnp.einsum("pw,nowc->nopc", cols, x, precision=HIGHEST)
    return 2.0 * x - 1.0


def pool_features(params, images: jax.Array) -> jax.Array:
    """FID features: uint8 [N, H, W, 3] images (or float in [0, 1]) -> float32 [N, 2048]."""
    return FIDInceptionV3().apply({"params": params}, inception_inputs(images))


def init_params(seed: int = 0) -> dict:
    """Random float32 params (He-normal convs, identity batch norms) from the architecture's
    shapes, without running it: for tests and shapes only; FID needs the real weights
    (inception_weights.load_inception_params)."""
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        name = path[-1].key
        if name == "kernel":  # He normal: std sqrt(2 / fan_in), fan_in = kh * kw * in
            return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:3]))).astype(np.float32)
        return np.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, np.float32)

    return jax.tree_util.tree_map_with_path(value, param_shapes())


def param_shapes() -> dict:
    """The params' tree of jax.ShapeDtypeStruct (traced, nothing computed)."""
    dummy = jnp.zeros((1, MIN_SIZE, MIN_SIZE, 3))
    return jax.eval_shape(lambda: FIDInceptionV3().init(jax.random.key(0), dummy)["params"])
