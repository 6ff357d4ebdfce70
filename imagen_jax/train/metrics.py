"""The run's metrics: metrics.jsonl and TensorBoard scalars and images."""

from __future__ import annotations

import json

import jax
import numpy as np

from imagen_jax import storage


def last_logged(workdir: str) -> dict:
    """The last line of a run's metrics.jsonl without its step ({} when there is none)."""
    path = storage.path(workdir) / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {k: v for k, v in json.loads(lines[-1]).items() if k != "step"} if lines else {}


def finished_step(workdir: str) -> int:
    """The latest committed checkpoint step of a run's workdir (0 when there is none)."""
    import orbax.checkpoint as ocp

    directory = storage.path(workdir) / "checkpoints"
    steps = ocp.utils.checkpoint_steps(directory) if directory.exists() else []
    return max(steps, default=0)


class MetricsWriter:
    """metrics.jsonl and TensorBoard scalars/images, on process 0 only, local or gs://
    (there, metrics.jsonl is uploaded at most every METRICS_UPLOAD_SECONDS and at close)."""

    METRICS_UPLOAD_SECONDS = 30.0

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter

        storage.register_tensorboard_writer()
        self.jsonl = storage.AppendFile(
            storage.join(workdir, "metrics.jsonl"), upload_every=self.METRICS_UPLOAD_SECONDS
        )
        self.tb = SummaryWriter(storage.join(workdir, "tensorboard"))

    def scalars(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write((json.dumps({"step": step, **values}) + "\n").encode())
        self.jsonl.flush()
        for name, value in values.items():
            self.tb.add_scalar(f"train/{name}", value, step)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        if self.enabled:
            self.tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
