"""The run's metrics: metrics.jsonl and TensorBoard scalars and images."""

from __future__ import annotations

import json
import logging

import jax
import numpy as np

from imagen_jax import storage

log = logging.getLogger(__name__)


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


def drop_lines_after(jsonl_path: str, step: int) -> int:
    """Rewrites a metrics.jsonl without its lines of steps after `step` (logged by a run that
    stopped before its next checkpoint: the resumed run logs those steps again) and without a
    torn last line; returns how many lines were dropped. Untouched when there are none."""
    path = storage.path(jsonl_path)
    if not path.exists():
        return 0
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a write cut short by a kill
            continue
        if record.get("step", 0) <= step:
            kept.append(line if line.endswith("\n") else line + "\n")  # a cut before its newline
    if "".join(kept) != text:
        storage.write_text(jsonl_path, "".join(kept))
    return len(lines) - len(kept)


class MetricsWriter:
    """metrics.jsonl and TensorBoard scalars/images, on process 0 only, local or gs://
    (there, metrics.jsonl is uploaded at most every METRICS_UPLOAD_SECONDS and at close).

    `start_step`: the step the run starts from (its restored checkpoint's, 0 for a new run).
    What an earlier run logged after it is dropped from metrics.jsonl and hidden in
    TensorBoard (tensorboardX's purge_step), so a resumed run's logs read as one run's."""

    METRICS_UPLOAD_SECONDS = 30.0

    def __init__(self, workdir: str, start_step: int = 0):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        from tensorboardX import SummaryWriter

        storage.register_tensorboard_writer()
        jsonl = storage.join(workdir, "metrics.jsonl")
        dropped = drop_lines_after(jsonl, start_step)
        if dropped:
            log.info("metrics.jsonl: dropped %d lines logged after step %d by the run before", dropped, start_step)
        self.jsonl = storage.AppendFile(jsonl, upload_every=self.METRICS_UPLOAD_SECONDS)
        tensorboard = storage.join(workdir, "tensorboard")
        purge = start_step + 1 if storage.path(tensorboard).exists() else None
        self.tb = SummaryWriter(tensorboard, purge_step=purge)

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
