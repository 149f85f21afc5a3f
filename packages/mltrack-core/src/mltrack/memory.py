"""The ``memory`` backend: keeps runs in this process only. For tests and documentation.

It is the reference implementation of the hooks, kept small enough to read in one sitting.
It is never chosen by default, since nothing it stores survives the process. It is built
into mltrack (registered before any entry point), so it is always there for tests and examples.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from array import array
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from mltrack.config import BackendConfig

if TYPE_CHECKING:
    from mltrack.backend import Backend
from mltrack.hookspecs import RegisterBackend, hookimpl
from mltrack.models import (
    Context,
    ExperimentRun,
    ExperimentStatus,
    ExperimentSummary,
    HealthStatus,
    MetricBatch,
    MetricSeries,
    ModelArtifact,
    RunFilter,
)


@attrs.define
class _StoredRun:
    run: ExperimentRun
    config: dict[str, Any]
    tags: set[str]
    status: ExperimentStatus = ExperimentStatus.RUNNING
    end_time: datetime | None = None
    final_metrics: dict[str, float] = attrs.field(factory=dict)
    # (name, context) -> step -> (value, timestamp); a repeated step replaces the earlier point
    series: dict[tuple[str, Context], dict[int, tuple[float, float]]] = attrs.field(factory=dict)
    artifacts: dict[str, ModelArtifact] = attrs.field(factory=dict)

    def summary(self) -> ExperimentSummary:
        return ExperimentSummary(
            experiment_id=self.run.id,
            name=self.run.run_name,
            status=self.status,
            start_time=self.run.start_time,
            end_time=self.end_time,
            config=dict(self.config),
            final_metrics=dict(self.final_metrics),
            tags=tuple(self.tags),
            experiment_name=self.run.experiment_name,
            description=self.run.description,
        )


_stores: dict[str, dict[str, _StoredRun]] = {}
_stores_lock = threading.Lock()


class MemoryBackend:
    """Runs in a dict, shared by every ``memory`` backend of the process with the same ``store``."""

    def __init__(self, config: BackendConfig) -> None:
        store = str(config.options.get("store", "default"))
        with _stores_lock:
            self._runs = _stores.setdefault(store, {})
        self._lock = threading.Lock()
        self._artifact_dir = Path(tempfile.mkdtemp(prefix="mltrack-memory-artifacts-"))

    # --- writes -------------------------------------------------------------------------

    @hookimpl
    def mltrack_create_run(self, run: ExperimentRun) -> None:
        with self._lock:
            self._runs[run.id] = _StoredRun(run, dict(run.config), set(run.tags))

    def _get(self, run_id: str) -> _StoredRun:
        try:
            return self._runs[run_id]
        except KeyError:
            raise KeyError(f"memory backend: no run {run_id!r}") from None

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        with self._lock:
            stored = self._get(run_id)
            for k, s, v, t in zip(batch.key_index, batch.steps, batch.values, batch.timestamps):
                stored.series.setdefault(batch.keys[k], {})[s] = (v, t)

    @hookimpl
    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        with self._lock:
            self._get(run_id).config.update(params)

    @hookimpl
    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        with self._lock:
            self._get(run_id).tags.update(tags)

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        target = self._artifact_dir / run_id / artifact.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact.file_path, target)
        with self._lock:
            self._get(run_id).artifacts[artifact.name] = attrs.evolve(artifact, file_path=str(target))

    @hookimpl
    def mltrack_finish_run(
        self, run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        with self._lock:
            stored = self._get(run_id)
            stored.status = status
            stored.end_time = end_time
            stored.final_metrics.update(final_metrics)

    @hookimpl
    def mltrack_resume_run(self, run_id: str) -> None:
        with self._lock:
            stored = self._get(run_id)
            stored.status = ExperimentStatus.RUNNING
            stored.end_time = None

    @hookimpl
    def mltrack_delete_run(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)
        shutil.rmtree(self._artifact_dir / run_id, ignore_errors=True)

    # --- reads --------------------------------------------------------------------------

    @hookimpl
    def mltrack_list_runs(self, run_filter: RunFilter) -> list[ExperimentSummary]:
        with self._lock:
            summaries = [r.summary() for r in self._runs.values()]
        summaries = [s for s in summaries if run_filter.matches(s)]
        summaries.sort(key=lambda s: s.start_time, reverse=True)
        return summaries[: run_filter.limit] if run_filter.limit is not None else summaries

    @hookimpl
    def mltrack_get_run(self, run_id: str) -> ExperimentSummary | None:
        with self._lock:
            stored = self._runs.get(run_id)
            return None if stored is None else stored.summary()

    @hookimpl
    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        with self._lock:
            stored = self._runs.get(run_id)
            if stored is None:
                return None
            out = []
            for (name, ctx), points in stored.series.items():
                if names is not None and name not in names:
                    continue
                steps = sorted(points)
                out.append(
                    MetricSeries(
                        name=name,
                        steps=array("q", steps),
                        values=array("d", (points[s][0] for s in steps)),
                        timestamps=array("d", (points[s][1] for s in steps)),
                        context=dict(ctx),
                    )
                )
            return out

    @hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        with self._lock:
            stored = self._runs.get(run_id)
            return None if stored is None else list(stored.artifacts.values())

    @hookimpl
    def mltrack_health(self) -> HealthStatus:
        return HealthStatus(
            True, (), backend="memory", details={"runs": len(self._runs), "persistent": False}
        )

    def close(self) -> None:
        """Nothing to release: the data stays for other backends of this process."""


def clear(store: str = "default") -> None:
    """Forget every run of a memory store (between tests)."""
    with _stores_lock:
        _stores.get(store, {}).clear()


@hookimpl
def mltrack_register_backends(register: RegisterBackend) -> None:
    register(
        "memory",
        MemoryBackend,
        persistent=False,
        description="Keeps runs in this process only; for tests and examples.",
    )


if TYPE_CHECKING:

    def _conforms(backend: MemoryBackend) -> Backend:
        return backend  # the type checker holds MemoryBackend to mltrack.Backend
