"""Noise schedules as log-SNR functions of continuous time t in [0, 1] (design.md §3).

Everything downstream works in log-SNR lambda = log(alpha^2 / sigma^2), with the
variance-preserving identities alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda).
A schedule maps t -> lambda(t), decreasing from lambda_max (t = 0, nearly clean) to
lambda_min (t = 1, nearly pure noise); both ends are clamped so nothing is infinite.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

SCHEDULE_KINDS = ("cosine", "linear", "discrete_linear")


def alpha_sigma(logsnr):
    """(alpha_t, sigma_t) from log-SNR: alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda)."""
    logsnr = jnp.asarray(logsnr)
    return jnp.sqrt(jax.nn.sigmoid(logsnr)), jnp.sqrt(jax.nn.sigmoid(-logsnr))


def cosine_logsnr(t, *, s: float = 0.008, logsnr_min: float = -20.0, logsnr_max: float = 20.0):
    """Continuous cosine schedule of Improved DDPM (design.md §3), kept exact with the f(0) term.

    alpha_bar(t) = f(t) / f(0), f(t) = cos^2(theta_t), theta_t = pi/2 (t + s)/(1 + s), so
    lambda(t) = log(cos^2 theta_t / (cos^2 theta_0 - cos^2 theta_t))
              = 2 log cos theta_t - log(sin(theta_t - theta_0) sin(theta_t + theta_0)),
    the second form stable at both ends. Clamped to [logsnr_min, logsnr_max].
    """
    t = jnp.clip(jnp.asarray(t, jnp.result_type(float)), 0.0, 1.0)
    half_pi = 0.5 * math.pi
    theta_0 = half_pi * s / (1.0 + s)
    theta_t = half_pi * (t + s) / (1.0 + s)
    cos_t = jnp.sin(half_pi * (1.0 - t) / (1.0 + s))  # = cos(theta_t), exactly 0 at t = 1
    logsnr = 2.0 * jnp.log(cos_t) - jnp.log(jnp.sin(theta_t - theta_0) * jnp.sin(theta_t + theta_0))
    return jnp.clip(logsnr, logsnr_min, logsnr_max)


def linear_logsnr(
    t,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    num_steps: int = 1000,
    logsnr_min: float = -20.0,
    logsnr_max: float = 20.0,
):
    """DDPM's linear beta schedule taken to continuous time (design.md §3).

    beta(t) = N (beta_start + t (beta_end - beta_start)), so
    -log alpha_bar(t) = N beta_start t + N (beta_end - beta_start) t^2 / 2
    (= 0.1 t + 9.95 t^2 for the defaults) and lambda(t) = -log(expm1(-log alpha_bar(t))).
    """
    t = jnp.clip(jnp.asarray(t, jnp.result_type(float)), 0.0, 1.0)
    neg_log_alpha_bar = num_steps * beta_start * t + 0.5 * num_steps * (beta_end - beta_start) * t**2
    logsnr = -jnp.log(jnp.expm1(neg_log_alpha_bar))
    return jnp.clip(logsnr, logsnr_min, logsnr_max)


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's discrete linear beta table, float64 [num_steps] (beta_1 .. beta_N)."""
    return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)


def alpha_bar_table(betas) -> np.ndarray:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s) (design.md §3; NOT a product of the betas)."""
    return np.cumprod(1.0 - np.asarray(betas, np.float64))


def logsnr_from_alpha_bar(alpha_bar):
    """lambda = log(alpha_bar / (1 - alpha_bar))."""
    alpha_bar = np.asarray(alpha_bar, np.float64)
    return np.log(alpha_bar) - np.log1p(-alpha_bar)


def discrete_logsnr(t, *, table):
    """Discrete schedule: step i = round(t N) of an N-entry log-SNR table (t = i / N).

    t = 0 maps to the clean end (log-SNR of the table's step 0 is taken as +inf and
    clamped by the caller's Schedule); t = i / N for i >= 1 maps to table[i - 1].
    """
    table = jnp.asarray(table)
    n = table.shape[0]
    index = jnp.clip(jnp.round(jnp.asarray(t) * n).astype(jnp.int32), 0, n)
    padded = jnp.concatenate([jnp.full((1,), jnp.inf, table.dtype), table])
    return padded[index]


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A log-SNR schedule as static, hashable data: `Schedule('cosine')(t) -> lambda(t)`.

    kind: "cosine" (base and sr256 in the paper), "linear" (sr1024), or
    "discrete_linear" (DDPM's 1000-entry table, t = i / num_steps).
    """

    kind: str = "cosine"
    logsnr_min: float = -20.0
    logsnr_max: float = 20.0
    cosine_s: float = 0.008
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_steps: int = 1000

    def __post_init__(self):
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; use one of {SCHEDULE_KINDS}")
        if not self.logsnr_min < self.logsnr_max:
            raise ValueError(f"logsnr_min ({self.logsnr_min}) must be below logsnr_max ({self.logsnr_max})")

    def __call__(self, t):
        """lambda(t) for t in [0, 1], any shape, float32 unless x64 is on."""
        if self.kind == "cosine":
            return cosine_logsnr(t, s=self.cosine_s, logsnr_min=self.logsnr_min, logsnr_max=self.logsnr_max)
        if self.kind == "linear":
            return linear_logsnr(
                t,
                beta_start=self.beta_start,
                beta_end=self.beta_end,
                num_steps=self.num_steps,
                logsnr_min=self.logsnr_min,
                logsnr_max=self.logsnr_max,
            )
        table = logsnr_from_alpha_bar(alpha_bar_table(linear_betas(self.num_steps, self.beta_start, self.beta_end)))
        logsnr = discrete_logsnr(t, table=jnp.asarray(table, jnp.result_type(float)))
        return jnp.clip(logsnr, self.logsnr_min, self.logsnr_max)

    @classmethod
    def from_config(cls, config) -> "Schedule":
        """Build from a mapping or ml_collections ConfigDict with any of this class's fields."""
        fields = {f.name for f in dataclasses.fields(cls)}
        items = dict(config.items() if hasattr(config, "items") else config)
        unknown = sorted(set(items) - fields)
        if unknown:
            raise ValueError(f"unknown schedule fields {unknown}; valid fields are {sorted(fields)}")
        return cls(**items)


def time_at_logsnr(schedule: Schedule, logsnr: float) -> float:
    """The t in [0, 1] with schedule(t) = logsnr: 60 halvings of [0, 1] on the decreasing
    schedule (as precise as the schedule's dtype allows); 1.0 when logsnr <= schedule(1),
    0.0 when logsnr >= schedule(0). Evaluated eagerly, also while a function is traced."""
    with jax.ensure_compile_time_eval():
        at = lambda t: float(schedule(t))  # noqa: E731
        if logsnr <= at(1.0):
            return 1.0
        if logsnr >= at(0.0):
            return 0.0
        lo, hi = 0.0, 1.0  # schedule(lo) > logsnr > schedule(hi)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if at(mid) > logsnr else (lo, mid)
        return 0.5 * (lo + hi)
