"""Memory backends with one planted bug each, for the test that the conformance suite catches bugs.

Each mutant is a subclass of the reference :class:`MemoryBackend` overriding one hook, and
is registered as backend ``mutant-<name>`` by :data:`PLUGIN`. ``MUTANTS`` maps each name to
its class; the docstring of each class says the bug, in a user's words.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from mltrack.hookspecs import RegisterBackend, hookimpl
from mltrack.memory import MemoryBackend, _StoredRun
from mltrack.models import (
    ArtifactType,
    ExperimentRun,
    ExperimentStatus,
    ExperimentSummary,
    MetricBatch,
    MetricSeries,
    ModelArtifact,
    RunFilter,
)

# --- dropped fields --------------------------------------------------------------------------


class DropsDescription(MemoryBackend):
    """The run's description is never stored."""

    @hookimpl
    def mltrack_create_run(self, run: ExperimentRun) -> None:
        super().mltrack_create_run(attrs.evolve(run, description=None))


class DropsConfig(MemoryBackend):
    """The config given at creation is not stored."""

    @hookimpl
    def mltrack_create_run(self, run: ExperimentRun) -> None:
        super().mltrack_create_run(attrs.evolve(run, config={}))


class DropsCreationTags(MemoryBackend):
    """Tags given at creation are not stored (only ``set_tags`` ones)."""

    @hookimpl
    def mltrack_create_run(self, run: ExperimentRun) -> None:
        super().mltrack_create_run(attrs.evolve(run, tags=()))


class IgnoresFinalMetrics(MemoryBackend):
    """``finish_run``'s final metrics are never stored (final_metrics stays empty)."""

    @hookimpl
    def mltrack_finish_run(
        self, run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        super().mltrack_finish_run(run_id, status, end_time, {})


class DropsArtifactMetadata(MemoryBackend):
    """An artifact's metadata is not stored."""

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        super().mltrack_log_artifact(run_id, attrs.evolve(artifact, metadata={}))


class DropsArtifactChecksum(MemoryBackend):
    """An artifact's sha256 and size are not stored."""

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        super().mltrack_log_artifact(run_id, attrs.evolve(artifact, sha256=None, size=None))


# --- replace instead of merge ------------------------------------------------------------------


class SetTagsReplaces(MemoryBackend):
    """``set_tags`` replaces the run's tags instead of adding to them."""

    @hookimpl
    def mltrack_set_tags(self, run_id: str, tags: Sequence[str]) -> None:
        with self._lock:
            self._get(run_id).tags = set(tags)


class LogParamsReplaces(MemoryBackend):
    """``log_params`` replaces the run's config instead of merging into it."""

    @hookimpl
    def mltrack_log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        with self._lock:
            self._get(run_id).config = dict(params)


# --- metric points -------------------------------------------------------------------------------


def _rebatched(batch: MetricBatch, **columns: Sequence[Any]) -> MetricBatch:
    return attrs.evolve(batch, **columns)


class DropsLastPointOfBatch(MemoryBackend):
    """The last point of every batch is lost."""

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        n = len(batch) - 1
        super().mltrack_log_metrics(
            run_id,
            _rebatched(
                batch,
                key_index=batch.key_index[:n],
                steps=batch.steps[:n],
                values=batch.values[:n],
                timestamps=batch.timestamps[:n],
            ),
        )


class DropsContextSeries(MemoryBackend):
    """Points logged with a context are lost (only context-free series are stored)."""

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        keep = [i for i, k in enumerate(batch.key_index) if not batch.keys[k][1]]
        super().mltrack_log_metrics(
            run_id,
            _rebatched(
                batch,
                key_index=[batch.key_index[i] for i in keep],
                steps=[batch.steps[i] for i in keep],
                values=[batch.values[i] for i in keep],
                timestamps=[batch.timestamps[i] for i in keep],
            ),
        )


class LosesContext(MemoryBackend):
    """Every point is stored without its context (series of different contexts merge)."""

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        super().mltrack_log_metrics(run_id, _rebatched(batch, keys=[(name, ()) for name, _ in batch.keys]))


class ReversesValues(MemoryBackend):
    """A batch's values are stored against its steps in reverse order."""

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        super().mltrack_log_metrics(run_id, _rebatched(batch, values=list(reversed(batch.values))))


class StepOffByOne(MemoryBackend):
    """Every point is stored one step later than logged."""

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        super().mltrack_log_metrics(run_id, _rebatched(batch, steps=[s + 1 for s in batch.steps]))


class FirstValueOfStepWins(MemoryBackend):
    """A step logged again keeps its first value."""

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        with self._lock:
            stored = self._get(run_id)
            for k, s, v, t in zip(batch.key_index, batch.steps, batch.values, batch.timestamps):
                stored.series.setdefault(batch.keys[k], {}).setdefault(s, (v, t))


class DropsTimestamps(MemoryBackend):
    """Points are stored without their time (every timestamp reads 0, the epoch)."""

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        super().mltrack_log_metrics(run_id, _rebatched(batch, timestamps=[0.0] * len(batch)))


class TruncatesTimestampsToSeconds(MemoryBackend):
    """Point times are stored to the whole second (shifted by up to a second)."""

    @hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: MetricBatch) -> None:
        super().mltrack_log_metrics(
            run_id, _rebatched(batch, timestamps=[float(int(t)) for t in batch.timestamps])
        )


class UnsortedReads(MemoryBackend):
    """Metric histories read back in the order steps were first stored, not sorted by step."""

    @hookimpl
    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        with self._lock:
            stored = self._runs.get(run_id)
            if stored is None:
                return None
            return [
                MetricSeries(
                    name=name,
                    steps=array("q", points),
                    values=array("d", (v for v, _ in points.values())),
                    timestamps=array("d", (t for _, t in points.values())),
                    context=dict(ctx),
                )
                for (name, ctx), points in stored.series.items()
                if names is None or name in names
            ]


# --- unknown and deleted runs -------------------------------------------------------------------


class EmptyMetricsForUnknownRun(MemoryBackend):
    """``get_metrics`` of an unknown run answers [] (a run without metrics) instead of None."""

    @hookimpl
    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        return super().mltrack_get_metrics(run_id, names) or []


class EmptyArtifactsForUnknownRun(MemoryBackend):
    """``list_artifacts`` of an unknown run answers [] instead of None."""

    @hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        return super().mltrack_list_artifacts(run_id) or []


class PartialDelete(MemoryBackend):
    """A deleted run leaves the listing, but its metrics and artifacts still answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ghosts: dict[str, _StoredRun] = {}

    @hookimpl
    def mltrack_delete_run(self, run_id: str) -> None:
        with self._lock:
            ghost = self._runs.pop(run_id, None)
            if ghost is not None:
                self._ghosts[run_id] = ghost

    @hookimpl
    def mltrack_get_metrics(self, run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
        found = super().mltrack_get_metrics(run_id, names)
        return [] if found is None and run_id in self._ghosts else found

    @hookimpl
    def mltrack_list_artifacts(self, run_id: str) -> list[ModelArtifact] | None:
        ghost = self._ghosts.get(run_id)
        return list(ghost.artifacts.values()) if ghost is not None else super().mltrack_list_artifacts(run_id)


# --- statuses ----------------------------------------------------------------------------------


class CompletedStoredAsFailed(MemoryBackend):
    """A run finished COMPLETED is stored FAILED."""

    @hookimpl
    def mltrack_finish_run(
        self, run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        if status is ExperimentStatus.COMPLETED:
            status = ExperimentStatus.FAILED
        super().mltrack_finish_run(run_id, status, end_time, final_metrics)


class IgnoresStatus(MemoryBackend):
    """Every finished run is stored COMPLETED, whatever status it was finished with."""

    @hookimpl
    def mltrack_finish_run(
        self, run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        super().mltrack_finish_run(run_id, ExperimentStatus.COMPLETED, end_time, final_metrics)


class MissesCrash(MemoryBackend):
    """A run the writer process finishes CRASHED (its trainer died) is stored FAILED."""

    @hookimpl
    def mltrack_finish_run(
        self, run_id: str, status: ExperimentStatus, end_time: datetime, final_metrics: Mapping[str, float]
    ) -> None:
        if status is ExperimentStatus.CRASHED:
            status = ExperimentStatus.FAILED
        super().mltrack_finish_run(run_id, status, end_time, final_metrics)


class ResumeKeepsFinishedStatus(MemoryBackend):
    """A resumed run is not reopened: it keeps reading FAILED (or COMPLETED) while it is logged to."""

    @hookimpl
    def mltrack_resume_run(self, run_id: str) -> None:
        self._get(run_id)


# --- artifacts ---------------------------------------------------------------------------------


class DuplicateArtifacts(MemoryBackend):
    """An artifact logged again under the same name is stored a second time beside the first."""

    _counter = itertools.count()

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        super().mltrack_log_artifact(run_id, artifact)
        with self._lock:
            stored = self._get(run_id)
            stored.artifacts[f"{artifact.name}#{next(self._counter)}"] = stored.artifacts.pop(artifact.name)


class ArtifactTypeForcedToModel(MemoryBackend):
    """Every artifact is stored as a MODEL, whatever its type."""

    @hookimpl
    def mltrack_log_artifact(self, run_id: str, artifact: ModelArtifact) -> None:
        super().mltrack_log_artifact(run_id, attrs.evolve(artifact, artifact_type=ArtifactType.MODEL))


# --- listing -----------------------------------------------------------------------------------


class ListIgnoresStatusFilter(MemoryBackend):
    """``list_runs`` ignores the status filter."""

    @hookimpl
    def mltrack_list_runs(self, run_filter: RunFilter) -> list[ExperimentSummary]:
        return super().mltrack_list_runs(attrs.evolve(run_filter, status=None))


class ListIgnoresLimit(MemoryBackend):
    """``list_runs`` ignores the limit."""

    @hookimpl
    def mltrack_list_runs(self, run_filter: RunFilter) -> list[ExperimentSummary]:
        return super().mltrack_list_runs(attrs.evolve(run_filter, limit=None))


MUTANTS: dict[str, type[MemoryBackend]] = {
    "drops-description": DropsDescription,
    "drops-config": DropsConfig,
    "drops-creation-tags": DropsCreationTags,
    "ignores-final-metrics": IgnoresFinalMetrics,
    "drops-artifact-metadata": DropsArtifactMetadata,
    "drops-artifact-checksum": DropsArtifactChecksum,
    "set-tags-replaces": SetTagsReplaces,
    "log-params-replaces": LogParamsReplaces,
    "drops-last-point-of-batch": DropsLastPointOfBatch,
    "drops-context-series": DropsContextSeries,
    "loses-context": LosesContext,
    "reverses-values": ReversesValues,
    "step-off-by-one": StepOffByOne,
    "first-value-of-step-wins": FirstValueOfStepWins,
    "drops-timestamps": DropsTimestamps,
    "truncates-timestamps-to-seconds": TruncatesTimestampsToSeconds,
    "unsorted-reads": UnsortedReads,
    "empty-metrics-for-unknown-run": EmptyMetricsForUnknownRun,
    "empty-artifacts-for-unknown-run": EmptyArtifactsForUnknownRun,
    "partial-delete": PartialDelete,
    "completed-stored-as-failed": CompletedStoredAsFailed,
    "ignores-status": IgnoresStatus,
    "misses-crash": MissesCrash,
    "resume-keeps-finished-status": ResumeKeepsFinishedStatus,
    "duplicate-artifacts": DuplicateArtifacts,
    "artifact-type-forced-to-model": ArtifactTypeForcedToModel,
    "list-ignores-status-filter": ListIgnoresStatusFilter,
    "list-ignores-limit": ListIgnoresLimit,
}
"""Each planted bug by name; backend ``mutant-<name>`` runs it."""


class _MutantsPlugin:
    """Registers every mutant as backend ``mutant-<name>`` (not persistent: a memory store)."""

    @hookimpl
    def mltrack_register_backends(self, register: RegisterBackend) -> None:
        for name, cls in MUTANTS.items():
            register(f"mutant-{name}", cls, persistent=False, description=cls.__doc__ or "")


PLUGIN = _MutantsPlugin()
