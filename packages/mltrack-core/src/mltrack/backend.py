"""``mltrack.Backend``: the shape of a backend object, for an author's type checker and editor.

pluggy dispatches by method name and ``@hookimpl`` marker; this Protocol only spells out, with
types, what :mod:`mltrack.hookspecs` asks of a backend, so ``backend: mltrack.Backend =
MyBackend(config)`` makes mypy or pyright check every signature. Each method still needs
``@mltrack.hookimpl``. A test keeps it equal to the hookspecs, parameter for parameter.

Optional for a backend (not part of the Protocol): ``mltrack_open_ui`` (a store with a web
UI), ``mltrack_resume_run`` (continuing a stored run: ``start_run(resume=...)`` on a backend
without it is an error naming the backend and the hook; the conformance suite tests it),
``mltrack_set_state`` and ``close()`` (called when mltrack lets the backend go, to release its
store).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mltrack.models import (
        ExperimentRun,
        ExperimentStatus,
        ExperimentSummary,
        HealthStatus,
        MetricBatch,
        MetricSeries,
        ModelArtifact,
        RunFilter,
    )

__all__ = ["BACKEND_HOOKS", "Backend"]


class Backend(Protocol):
    """What a persistent backend implements: every write hook, every read hook, and health.

    Writes arrive in order per run: ``mltrack_create_run`` first, ``mltrack_finish_run``
    last. An unknown ``run_id`` on a read answers None (the repository turns that into
    :class:`mltrack.errors.RunNotFoundError`). A write that fails raises: mltrack retries,
    then counts the points as undelivered and tags the run; it never hides the failure.
    """

    def mltrack_create_run(self, run: ExperimentRun) -> None:
        """Create ``run`` (id chosen by mltrack, experiment, name, config, tags, start time)."""
        ...

    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        """Store a batch of points; a point at a step already stored replaces it."""
        ...

    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Merge ``params`` into the run's config (keys added or replaced, none removed)."""
        ...

    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        """Copy the file at ``artifact.file_path`` into the store, with its metadata, before returning."""
        ...

    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        """Add ``tags`` to the run's tags (adding, never replacing)."""
        ...

    def mltrack_finish_run(
        self,
        run_id: str,
        status: ExperimentStatus,
        end_time: datetime,
        final_metrics: Mapping[str, float],
    ) -> None:
        """Record the run's end: status, end time, final metrics."""
        ...

    def mltrack_delete_run(self, run_id: str) -> None:
        """Delete the run and everything stored for it."""
        ...

    def mltrack_list_runs(self, run_filter: RunFilter) -> list[ExperimentSummary] | None:
        """The runs matching ``run_filter``, newest first; a dead writer's RUNNING run reads CRASHED."""
        ...

    def mltrack_get_run(self, run_id: str) -> ExperimentSummary | None:
        """The run with exactly this id, or None."""
        ...

    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        """The run's histories sorted by step (all when ``names`` is None); None for an unknown run."""
        ...

    def mltrack_list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        """The run's artifacts with readable ``file_path``; None for an unknown run."""
        ...

    def mltrack_health(self) -> HealthStatus:
        """Whether the store works; returns (never raises) when it is down."""
        ...


BACKEND_HOOKS: frozenset[str] = frozenset(
    name for name in vars(Backend) if name.startswith("mltrack_") and callable(vars(Backend)[name])
)
"""The hooks every persistent backend implements (the members of :class:`Backend`)."""
