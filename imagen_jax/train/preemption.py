"""SIGTERM (preemption) read at step boundaries."""

from __future__ import annotations

import signal

from jax.experimental import multihost_utils


class Preemption:
    """SIGTERM read at step boundaries. One process: our own handler sets a flag (the previous
    handler is restored on exit). Several: JAX's coordination service gets the signal and
    `reached_preemption_sync_point` makes every host stop at the SAME step."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.requested = False
        self._previous = None

    def requested_at(self, step: int) -> bool:
        if self.enabled:
            return self.requested
        return multihost_utils.reached_preemption_sync_point(step)

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no signal handling
            self._previous = None
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
