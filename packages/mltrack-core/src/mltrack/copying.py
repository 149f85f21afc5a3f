"""Copying runs between any two backends: ``mltrack copy --from aim --to mlflow``.

A copy keeps the run's id, experiment, name, description, tags, config, start and end time,
status, final metrics, every metric point (step, value, timestamp, context) and every artifact
(with its type, metadata and checksum). It is idempotent: a run the target already holds
complete (same status, same number of points per metric, same artifacts) is skipped, and a
partial one (an earlier copy that was cut off) is replaced. Runs still RUNNING are skipped:
copy them once they have finished.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import attrs

from mltrack.errors import BackendError, RunNotFoundError
from mltrack.models import (
    ExperimentRun,
    ExperimentStatus,
    ExperimentSummary,
    MetricBatch,
    MetricSeries,
    ModelArtifact,
    to_context,
)

if TYPE_CHECKING:
    from mltrack.repository import ExperimentRepository

__all__ = ["BATCH_POINTS", "CopyReport", "copy_runs"]

BATCH_POINTS = 50_000
"""Most points handed to the target in one ``mltrack_log_metrics`` call."""


@attrs.frozen
class CopyReport:
    """What one copy did: runs copied, already there, replaced (partial before), still running."""

    copied: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    """Already complete in the target: nothing added."""
    replaced: tuple[str, ...] = ()
    """Present but incomplete in the target (an interrupted copy): deleted and copied again."""
    running: tuple[str, ...] = ()
    """Still RUNNING in the source: not copied."""
    points: int = 0
    artifacts: int = 0


@attrs.frozen
class _Snapshot:
    """Everything of one run that a copy carries, read from the source."""

    summary: ExperimentSummary
    series: list[MetricSeries]
    artifacts: list[ModelArtifact]

    def fingerprint(self) -> tuple[object, ...]:
        counts = sorted((s.name, sorted(s.context.items()), len(s.values)) for s in self.series)
        files = sorted((a.name, a.sha256 or "") for a in self.artifacts)
        return (self.summary.status, counts, files)


def copy_runs(
    source: ExperimentRepository,
    target: ExperimentRepository,
    run_ids: Iterable[str] | None = None,
) -> CopyReport:
    """Copy runs (ids or unique prefixes; default: every run) from ``source`` to ``target``.

    Raises :class:`RunNotFoundError` for an unknown id before anything is written, and
    :class:`BackendError` if the target does not read back what was written.
    """
    if run_ids is None:
        ids = [s.experiment_id for s in source.list_experiments_sync()]
    else:
        ids = [source.resolve_id(r) for r in run_ids]
    copied: list[str] = []
    skipped: list[str] = []
    replaced: list[str] = []
    running: list[str] = []
    points = artifacts = 0
    for run_id in dict.fromkeys(ids):
        snap = _read(source, run_id)
        if snap.summary.status is ExperimentStatus.RUNNING:
            running.append(run_id)
            continue
        existing = _read_or_none(target, run_id)
        if existing is not None:
            if existing.fingerprint() == snap.fingerprint():
                skipped.append(run_id)
                continue
            target._write("mltrack_delete_run", run_id=run_id)
            replaced.append(run_id)
        else:
            copied.append(run_id)
        points += _write(target, snap)
        artifacts += len(snap.artifacts)
        written = _read_or_none(target, run_id)
        if written is None or written.fingerprint() != snap.fingerprint():
            raise BackendError(
                f"copy of run {run_id} to backend {target.backend!r} did not read back complete: "
                f"expected {snap.fingerprint()!r}, read {None if written is None else written.fingerprint()!r}"
            )
    return CopyReport(tuple(copied), tuple(skipped), tuple(replaced), tuple(running), points, artifacts)


def _read(repo: ExperimentRepository, run_id: str) -> _Snapshot:
    return _Snapshot(
        repo.get_experiment_sync(run_id),
        repo.get_experiment_metrics_sync(run_id).all_series,
        repo.list_artifacts_sync(run_id),
    )


def _read_or_none(repo: ExperimentRepository, run_id: str) -> _Snapshot | None:
    try:
        return _read(repo, run_id)
    except RunNotFoundError:
        return None


def _write(target: ExperimentRepository, snap: _Snapshot) -> int:
    """Write one run through the target's own write hooks; returns the points written."""
    s = snap.summary
    run = ExperimentRun(
        id=s.experiment_id,
        experiment_name=s.experiment_name or s.name,
        config=s.config,
        start_time=s.start_time,
        name=s.name,
        tags=s.tags,
        description=s.description,
    )
    target._write("mltrack_create_run", run=run)
    points = 0
    for series in snap.series:
        for batch in _batches(series, s.start_time.timestamp()):
            target._write("mltrack_log_metrics", run_id=run.id, batch=batch)
            points += len(batch)
    for artifact in snap.artifacts:
        target._write("mltrack_log_artifact", run_id=run.id, artifact=artifact)
    target._write(
        "mltrack_finish_run",
        run_id=run.id,
        status=s.status,
        end_time=s.end_time or datetime.now(timezone.utc),
        final_metrics=dict(s.final_metrics),
    )
    return points


def _batches(series: MetricSeries, default_time: float) -> Iterable[MetricBatch]:
    """The series in batches; a source without point times gives each the run's start time."""
    keys = [(series.name, to_context(series.context))]
    steps: Sequence[int] = series.steps
    values: Sequence[float] = series.values
    times: Sequence[float] = (
        series.timestamps if series.timestamps is not None else [default_time] * len(values)
    )
    for start in range(0, len(values), BATCH_POINTS):
        end = min(start + BATCH_POINTS, len(values))
        yield MetricBatch(
            keys,
            [0] * (end - start),
            [int(x) for x in steps[start:end]],
            [float(x) for x in values[start:end]],
            [float(x) for x in times[start:end]],
        )
