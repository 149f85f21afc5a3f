"""Writing metric batches into an Aim run, by the cheapest path that is safe for this Aim.

``run.track`` (the only public path) costs ~250-500 us a point: each point is about seven
separate database commits, plus a context rebuild and a clock read. mltrack hands points
over in batches, so most of that can be done once per (metric, context) sequence; that
fast path reaches into Aim's storage and lives in :mod:`mltrack_aim.internals`, which
enables it only for the Aim versions it was verified with. Any other version, or
``MLTRACK_AIM_BATCH=0``, uses ``run.track``. A fresh-process read-back test
(tests/aim/test_batch_writes.py) guards both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mltrack_aim import internals
from mltrack_aim.internals import aim_version

__all__ = ["MetricWriter", "aim_version", "batch_path_enabled"]


def batch_path_enabled() -> bool:
    """True when metric batches may bypass ``run.track`` (verified Aim, not switched off)."""
    return internals.fast_paths()


class MetricWriter:
    """Writes (name, context) sequences of one open Aim run."""

    def __init__(self, run: Any, *, batched: bool | None = None) -> None:
        self.run = run
        self.batched = batch_path_enabled() if batched is None else batched

    def write(
        self,
        name: str,
        context: Mapping[str, Any],
        steps: Sequence[int],
        values: Sequence[float],
        timestamps: Sequence[float],
    ) -> None:
        """Store the points of one sequence; a repeated step replaces the earlier value."""
        if not len(steps):
            return
        if self.batched:
            internals.write_sequence(self.run, name, context, steps, values, timestamps)
            return
        # The public path: each point is stamped with the time of this call.
        ctx = dict(context) or None
        track = self.run.track
        for step, value in zip(steps, values):
            track(float(value), name=name, step=int(step), context=ctx)
