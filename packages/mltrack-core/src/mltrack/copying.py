"""Copying runs between any two backends: ``mltrack copy --from aim --to mlflow``.

A copy keeps the run's id, experiment, name, description, tags, config, start and end time,
status, final metrics, every metric point (step, value, timestamp, context) and every artifact
(with its type, metadata and checksum). It is idempotent: a run the target already holds
complete (same status, same number of points per metric, same artifacts) is skipped, and a
partial one (an earlier copy that was cut off) is replaced. Runs still RUNNING are skipped:
copy them once they have finished.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import attrs

from mltrack.errors import BackendError, RunNotFoundError
from mltrack.models import ExperimentStatus, ExperimentSummary, MetricSeries, ModelArtifact

__all__ = ["CopyReport", "RunSource", "RunTarget", "copy_runs"]


class _History(Protocol):
    @property
    def all_series(self) -> list[MetricSeries]: ...


class RunSource(Protocol):
    """What a copy reads runs from: an :class:`~mltrack.repository.ExperimentRepository`."""

    def list_experiments_sync(self) -> list[ExperimentSummary]: ...
    def resolve_id(self, run_id: str) -> str: ...
    def get_experiment_sync(self, run_id: str) -> ExperimentSummary: ...
    def get_experiment_metrics_sync(self, run_id: str) -> _History: ...
    def list_artifacts_sync(self, run_id: str) -> list[ModelArtifact]: ...


class RunTarget(RunSource, Protocol):
    """What a copy writes runs into: a repository that also writes whole runs."""

    @property
    def backend(self) -> str: ...

    def write_run_sync(
        self,
        summary: ExperimentSummary,
        series: Iterable[MetricSeries] = (),
        artifacts: Iterable[ModelArtifact] = (),
        *,
        replace: bool = False,
    ) -> int: ...


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
    source: RunSource,
    target: RunTarget,
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
        if existing is not None and existing.fingerprint() == snap.fingerprint():
            skipped.append(run_id)
            continue
        (copied if existing is None else replaced).append(run_id)
        points += target.write_run_sync(
            snap.summary, snap.series, snap.artifacts, replace=existing is not None
        )
        artifacts += len(snap.artifacts)
        written = _read_or_none(target, run_id)
        if written is None or written.fingerprint() != snap.fingerprint():
            raise BackendError(
                f"copy of run {run_id} to backend {target.backend!r} did not read back complete: "
                f"expected {snap.fingerprint()!r}, read {None if written is None else written.fingerprint()!r}"
            )
    return CopyReport(tuple(copied), tuple(skipped), tuple(replaced), tuple(running), points, artifacts)


def _read(repo: RunSource, run_id: str) -> _Snapshot:
    return _Snapshot(
        repo.get_experiment_sync(run_id),
        repo.get_experiment_metrics_sync(run_id).all_series,
        repo.list_artifacts_sync(run_id),
    )


def _read_or_none(repo: RunSource, run_id: str) -> _Snapshot | None:
    try:
        return _read(repo, run_id)
    except RunNotFoundError:
        return None
