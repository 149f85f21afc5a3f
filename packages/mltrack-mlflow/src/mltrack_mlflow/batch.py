"""Writing mltrack's metric batches to MLflow: keys, mapping tags, and the cheapest safe write.

A (name, context) pair becomes one MLflow metric key (see :func:`mapping.metric_key`); a
key that is not the plain name gets a ``mltrack.metric.<key>`` tag naming what it encodes.
Points go through MLflow's ``log_batch`` (1000 a call), or, on a SQLite store of a verified
MLflow, straight into its tables in one transaction (:mod:`mltrack_mlflow.internals`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from mltrack.models import MetricBatch, to_plain
from mltrack_mlflow import internals
from mltrack_mlflow import mapping as m
from mltrack_mlflow.store import OpenRun, chunks

__all__ = ["MAX_METRICS_PER_CALL", "Point", "metric_points", "ms", "write_points"]

MAX_METRICS_PER_CALL = 1000  # MLflow's log_batch limit

Point = tuple[str, float, int, int]
"""An MLflow metric point: key, value, timestamp (ms), step."""


def ms(moment: datetime | float) -> int:
    """A moment (datetime or epoch seconds) as MLflow's epoch milliseconds."""
    seconds = moment.timestamp() if isinstance(moment, datetime) else moment
    return round(seconds * 1000)


def metric_points(state: OpenRun, batch: MetricBatch) -> tuple[list[Point], dict[str, str]]:
    """The batch's points under MLflow keys (a step repeated in it keeps its last value),
    and the mapping tags of keys new to the run (recorded in ``state``)."""
    points: list[Point] = []
    mapping: dict[str, str] = {}
    for name, context, steps, values, timestamps in batch.groups():
        key = m.metric_key(name, context)
        if key != name and key not in state.mapped_keys:
            mapping[m.metric_mapping_tag(key)] = json.dumps(
                {"key": key, "name": name, "context": to_plain(context)}, ensure_ascii=False
            )
            state.mapped_keys.add(key)
        s_col, v_col, t_col = m.last_per_step(steps, values, timestamps)
        points.extend((key, v, ms(t), s) for s, v, t in zip(s_col, v_col, t_col))
    return points, mapping


def write_points(store: Any, mlflow_id: str, points: Sequence[Point], *, bulk: bool) -> None:
    """Store the points: in one SQL transaction if ``bulk``, else through ``log_batch``."""
    if bulk:
        internals.insert_points(store, mlflow_id, points)
        return
    from mlflow.entities import Metric

    for chunk in chunks(points, MAX_METRICS_PER_CALL):
        metrics = [Metric(key, value, ts, step) for key, value, ts, step in chunk]
        store.log_batch(mlflow_id, metrics=metrics, params=[], tags=[])
