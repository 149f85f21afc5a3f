"""Writing metric batches into an Aim run, by the cheapest path that is safe for this Aim.

``run.track`` (the only public path) costs ~250-500 us a point: each point is about seven
separate database commits, plus a context rebuild and a clock read. mltrack hands points
over in batches, so most of that can be done once per (metric, context) sequence:

* **local repositories**: every point's four columns (value, epoch, time, step) go into one
  RocksDB write batch, encoded by Aim's own tree encoder, committed once; the sequence's
  metadata (last value and step, min, max) is written once per batch.
* **aim:// servers** keep ``run.track``: the server applies every instruction on its own,
  and batching them into one request (``atomic_track``, or one ``update`` per column) was
  measured slower end to end (2.1-2.6 ms a point against 0.75 ms).

A new sequence gets its first point through Aim's own tracker, which writes every piece of
sequence metadata (contexts, types, first value) the UI and ``query_metrics`` need. The
batch path leans on Aim internals, so it is enabled only for the Aim versions it was tested
on (``TESTED_AIM``); any other version, or ``MLTRACK_AIM_BATCH=0``, uses ``run.track``.
A fresh-process read-back test (tests/aim/test_batch_writes.py) guards it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import Any, cast

from aim.storage import treeutils
from aim.storage.context import Context

from mltrack.settings import env

# Cython modules without stubs: typed as Any on purpose.
E: Any = import_module("aim.storage.encoding")
hash_auto: Any = import_module("aim.storage.hashing").hash_auto
PrefixView: Any = import_module("aim.storage.prefixview").PrefixView

__all__ = ["TESTED_AIM", "MetricWriter", "aim_version", "batch_path_enabled"]

TESTED_AIM = ("3.29.",)
"""Aim versions whose internals the batch path was verified against."""


def aim_version() -> str:
    """The installed aim's version, e.g. ``3.29.1``."""
    from importlib.metadata import version

    return version("aim")


def batch_path_enabled() -> bool:
    """True when metric batches may bypass ``run.track`` (tested Aim, not switched off)."""
    if not env("MLTRACK_AIM_BATCH"):
        return False
    return aim_version().startswith(TESTED_AIM)


def _root_and_prefix(container: Any) -> tuple[Any, bytes]:
    """The RocksDB container under a chain of Aim prefix views, and the whole key prefix."""
    prefix = b""
    while isinstance(container, PrefixView):
        prefix = container.prefix + prefix
        container = container.parent
    return container, prefix


class MetricWriter:
    """Writes (name, context) sequences of one open Aim run."""

    def __init__(self, run: Any, *, batched: bool | None = None) -> None:
        self.run = run
        self.batched = batch_path_enabled() if batched is None else batched
        self.remote = bool(run.repo.is_remote_repo)

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
        if not self.batched or self.remote:
            self._track_each(name, context, steps, values, timestamps)
            return
        tracker = self.run._tracker
        ctx = Context(cast(Any, dict(context)))
        info = tracker.sequence_infos.get((ctx.idx, name))
        start = 0
        if info is None or not info.initialized:
            # Aim's tracker sets up the sequence (contexts, dtype, first value and step).
            tracker._track(
                float(values[0]), float(timestamps[0]), name, int(steps[0]), None, context=dict(context)
            )
            info = tracker.sequence_infos[(ctx.idx, name)]
            start = 1
        if start >= len(steps):
            return
        if info.version != 2 or info.step_view is None or info.dtype not in ("float", "int"):
            self._track_each(name, context, steps[start:], values[start:], timestamps[start:])
            return
        rows = [
            (int(s), float(v), float(t)) for s, v, t in zip(steps[start:], values[start:], timestamps[start:])
        ]
        self._write_local(info, rows)
        self._update_metadata(ctx.idx, name, info, rows)

    def _track_each(
        self,
        name: str,
        context: Mapping[str, Any],
        steps: Sequence[int],
        values: Sequence[float],
        timestamps: Sequence[float],
    ) -> None:
        """One point at a time through Aim's tracker, each with the time it was logged at.

        ``run.track`` stamps every point with the time of the call, not the time the user
        logged it (a batch arrives up to a flush interval later, a copied run years later):
        on a tested Aim, its tracker's ``_track`` takes the point's own time instead.
        """
        ctx = dict(context) or None
        if self.batched:
            tracker = self.run._tracker
            if tracker._non_blocking:  # an aim:// server: through Aim's queue, as run.track does
                register = tracker.repo.tracking_queue.register_task
                for step, value, ts in zip(steps, values, timestamps):
                    register(
                        tracker._track, float(value), float(ts), name, int(step), None, context=ctx or {}
                    )
            else:
                for step, value, ts in zip(steps, values, timestamps):
                    tracker._track(float(value), float(ts), name, int(step), None, context=ctx or {})
            return
        track = self.run.track
        for step, value in zip(steps, values):
            track(float(value), name=name, step=int(step), context=ctx)

    @staticmethod
    def _write_local(info: Any, rows: list[tuple[int, float, float]]) -> None:
        """Put every column of every row into one key-sorted RocksDB batch, committed once.

        Each value is what Aim's own tree ``set()`` writes for a scalar (one key: the
        column's prefix + the encoded step hash; value: Aim's encoding), without the range
        delete and blob delete ``set()`` adds, which only matter for nested or blob values.
        Key order makes the write itself about 7x cheaper.
        """
        views = (info.val_view, info.epoch_view, info.time_view, info.step_view)
        resolved = [_root_and_prefix(view.tree.container) for view in views]
        root = resolved[0][0]
        if any(r is not root for r, _ in resolved):  # not the layout this path was tested on
            MetricWriter._write_via_aim_set(info, rows)
            return
        encode, encode_path = E.encode, E.encode_path
        latest = {step: (value, ts) for step, value, ts in rows}  # a repeated step: last wins
        # Records sorted by the encoded step hash; each column's keys are its prefix plus that
        # key, and no column prefix is a prefix of another, so writing the columns in prefix
        # order writes the whole batch in key order with one sort of the points.
        records = sorted(
            (encode_path((hash_auto(step),)), step, value, ts) for step, (value, ts) in latest.items()
        )
        none = encode(None)
        batch = root.batch()
        put = batch.put
        columns = sorted(zip((prefix for _, prefix in resolved), range(4)))
        for prefix, column in columns:
            if column == 0:
                for key, _, value, _ in records:
                    put(prefix + key, encode(value))
            elif column == 1:
                for key, _, _, _ in records:
                    put(prefix + key, none)
            elif column == 2:
                for key, _, _, ts in records:
                    put(prefix + key, encode(ts))
            else:
                for key, step, _, _ in records:
                    put(prefix + key, encode(step))
        root.commit(batch)

    @staticmethod
    def _write_via_aim_set(info: Any, rows: list[tuple[int, float, float]]) -> None:
        trees = (info.val_view.tree, info.epoch_view.tree, info.time_view.tree, info.step_view.tree)
        containers = [tree.container for tree in trees]
        batch = containers[0].batch()
        encode_tree = treeutils.encode_tree
        for step, value, ts in rows:
            path = E.encode_path((hash_auto(step),))
            end = path + b"\xff"
            for container, item in zip(containers, (value, None, ts, step)):
                # Exactly what Aim's tree set() does for one value, minus its own commit.
                container.delete_range(path, end, store_batch=batch)
                for key, encoded in encode_tree(item, strict=True):
                    container.set(path + key, encoded, store_batch=batch)
        containers[0].commit(batch)

    def _update_metadata(
        self, ctx_idx: int, name: str, info: Any, rows: list[tuple[int, float, float]]
    ) -> None:
        meta = self.run.meta_run_tree
        top_step = max(step for step, _, _ in rows)
        if top_step >= info.count:
            last = next(value for step, value, _ in reversed(rows) if step == top_step)
            meta["traces", ctx_idx, name, "last"] = last
            meta["traces", ctx_idx, name, "last_step"] = top_step
            info.count = top_step + 1
        finite = [value for _, value, _ in rows if not math.isnan(value)]
        if finite:
            high, low = max(finite), min(finite)
            if high > info.max:
                meta["traces", ctx_idx, name, "max"] = high
                info.max = high
            if low < info.min:
                meta["traces", ctx_idx, name, "min"] = low
                info.min = low
