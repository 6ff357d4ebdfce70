"""The run's metrics: metrics.jsonl and TensorBoard scalars and images."""

from __future__ import annotations

import json

import jax
import numpy as np

from imagen_jax import storage


def last_logged(workdir: str) -> dict:
    """The last training line of a run's metrics.jsonl without its step ({} when there is
    none); in-loop evaluation lines (eval/...) are skipped."""
    path = storage.path(workdir) / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    for line in reversed(lines):
        values = {k: v for k, v in json.loads(line).items() if k != "step"}
        if not all(k.startswith("eval/") for k in values):
            return values
    return {}


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

    def scalars(self, step: int, values: dict, section: str = "train") -> None:
        """One metrics.jsonl line (keys prefixed "SECTION/" except for "train") and the
        TensorBoard scalars SECTION/NAME."""
        if not self.enabled or not values:
            return
        keys = {name: name if section == "train" else f"{section}/{name}" for name in values}
        self.jsonl.write((json.dumps({"step": step, **{keys[k]: v for k, v in values.items()}}) + "\n").encode())
        self.jsonl.flush()
        for name, value in values.items():
            self.tb.add_scalar(f"{section}/{name}", value, step)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        if self.enabled:
            self.tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
