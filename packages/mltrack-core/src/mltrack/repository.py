"""Reading runs back: list, get, metric histories, artifacts, comparison."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, ParamSpec, TypeVar

import attrs

from mltrack.copying import CopyReport, copy_runs
from mltrack.errors import RunNotFoundError, RunStateError
from mltrack.models import (
    ExperimentRun,
    ExperimentStatus,
    ExperimentSummary,
    MetricBatch,
    MetricPoint,
    MetricSeries,
    ModelArtifact,
    RunFilter,
    to_context,
    to_status,
)
from mltrack.plugins import ActiveBackends

__all__ = ["BATCH_POINTS", "Comparison", "ExperimentRepository", "MetricHistory", "metric_direction"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

BATCH_POINTS = 50_000
"""Most points :meth:`ExperimentRepository.write_run_sync` hands a backend in one ``mltrack_log_metrics`` call."""

# Whole words of a metric's name (split at "/", "_", "." ...), so "time/time_elapsed" or
# "episodes" never read as a reward; a word ending in one of the _*_ENDINGS counts too ("valloss").
_LOWER_IS_BETTER = frozenset(
    {
        "loss",
        "losses",
        "error",
        "errors",
        "err",
        "drawdown",
        "regret",
        "perplexity",
        "mse",
        "mae",
        "rmse",
        "nll",
    }
)
_HIGHER_IS_BETTER = frozenset(
    {
        "reward", "rewards", "rew", "return", "returns", "accuracy", "acc", "score", "scores",
        "precision", "recall", "f1", "auc", "win", "wins", "winrate", "sharpe", "success",
    }
)  # fmt: skip
_LOWER_ENDINGS = ("loss", "error")
_HIGHER_ENDINGS = ("reward", "accuracy", "return", "score")


def metric_direction(metric: str) -> int:
    """Which way a metric gets better, from its name: -1 lower, +1 higher, 0 no direction.

    Losses and errors go down; rewards, returns, accuracies and scores go up; times, counts,
    rates and settings have no "better" (0), so no run is called best by them.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", metric.lower()) if w]
    if any(w in _LOWER_IS_BETTER or w.endswith(_LOWER_ENDINGS) for w in words):
        return -1
    if any(w in _HIGHER_IS_BETTER or w.endswith(_HIGHER_ENDINGS) for w in words):
        return 1
    return 0


class MetricHistory:
    """A run's metric histories: iterable as points, columnar underneath.

    ``for p in history: p.name, p.step, p.value, p.timestamp`` walks every point;
    ``history.series("loss")`` gives one metric's columns (``.steps``, ``.values``).
    """

    def __init__(self, run_id: str, series: Sequence[MetricSeries]) -> None:
        self.run_id = run_id
        self._series = list(series)

    @property
    def names(self) -> list[str]:
        """Metric names, sorted, each once."""
        return sorted({s.name for s in self._series})

    @property
    def all_series(self) -> list[MetricSeries]:
        """Every (metric, context) series."""
        return list(self._series)

    def series(self, name: str, context: Mapping[str, Any] | None = None) -> MetricSeries:
        """The history of metric ``name`` (in ``context``; default: the metric's only context)."""
        matches = [s for s in self._series if s.name == name]
        if context is not None:
            matches = [s for s in matches if dict(s.context) == dict(context)]
        elif len(matches) > 1:
            plain = [s for s in matches if not s.context]
            matches = plain or matches
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise KeyError(f"run {self.run_id} has no metric {name!r}; it has: {', '.join(self.names)}")
        contexts = "; ".join(repr(dict(s.context)) for s in matches)
        raise KeyError(f"metric {name!r} has several contexts ({contexts}): pass context=")

    def __iter__(self) -> Iterator[MetricPoint]:
        for s in sorted(self._series, key=lambda s: (s.name, sorted(s.context.items()))):
            yield from s

    def __len__(self) -> int:
        return sum(len(s) for s in self._series)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self._series)

    def to_pandas(self) -> Any:
        """A pandas DataFrame with columns name, step, value, timestamp, context."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "MetricHistory.to_pandas needs pandas: pip install 'mltrack-core[pandas]'"
            ) from None
        frames = []
        for s in self._series:
            ts = None if s.timestamps is None else pd.to_datetime(list(s.timestamps), unit="s", utc=True)
            frames.append(
                pd.DataFrame(
                    {
                        "name": s.name,
                        "step": list(s.steps),
                        "value": list(s.values),
                        "timestamp": ts,
                        "context": repr(dict(s.context)) if s.context else "",
                    }
                )
            )
        if not frames:
            return pd.DataFrame(columns=["name", "step", "value", "timestamp", "context"])
        return pd.concat(frames, ignore_index=True)


@attrs.frozen
class Comparison:
    """Runs side by side: the parameters that differ, final metrics, the best run per metric."""

    runs: list[ExperimentSummary]
    metrics: list[str]
    differing_params: dict[str, dict[str, Any]]
    final_metrics: dict[str, dict[str, float]]
    best: dict[str, str]
    """Metric name -> id of the best run: lowest for losses and errors, highest for rewards,
    returns, accuracies and scores (:func:`metric_direction`). Metrics with no direction (times,
    counts) and ties have none."""
    ties: dict[str, list[str]] = attrs.field(factory=dict)
    """Metric name -> ids of the runs sharing the best value, when several do."""


class ExperimentRepository:
    """Query finished and running experiments, as in the seed's "Experiment Repository"."""

    def __init__(
        self,
        backends: ActiveBackends,
        before_read: Callable[[], object] | None = None,
        *,
        owns_backends: bool = False,
    ) -> None:
        self._backends = backends
        self._before_read = before_read
        self._owns_backends = owns_backends
        self._store_lock = threading.Lock()

    async def _in_thread(self, call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run a blocking store call in a worker thread, so the event loop serves other tasks meanwhile.

        The async methods of one repository reach the store one at a time: a store's client
        (an Aim repository, a database connection) need not be safe to use from two threads at once.
        """

        def locked() -> _T:
            with self._store_lock:
                return call(*args, **kwargs)

        return await asyncio.to_thread(locked)

    def close(self) -> None:
        """Release the stores if this repository opened them (:func:`mltrack.open_repository`)."""
        if self._owns_backends:
            self._backends.close()

    def __enter__(self) -> ExperimentRepository:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """Name of the backend answering reads."""
        return self._backends.primary

    def _reads(self) -> ActiveBackends:
        """The backends to read from, once this process's own writes are stored (read your writes)."""
        if self._before_read is not None:
            self._before_read()
        return self._backends

    def list_experiments_sync(
        self,
        status: ExperimentStatus | str | None = None,
        name: str | None = None,
        tags: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[ExperimentSummary]:
        """Runs matching every given condition, newest first (blocking form)."""
        run_filter = RunFilter(
            status=None if status is None else to_status(status),
            name=name,
            tags=tags,
            limit=limit,
        )
        return list(self._reads().list_runs(run_filter) or [])

    async def list_experiments(
        self,
        status: ExperimentStatus | str | None = None,
        name: str | None = None,
        tags: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[ExperimentSummary]:
        """Runs matching every given condition, newest first."""
        return await self._in_thread(self.list_experiments_sync, status, name, tags, limit)

    def resolve_id(self, run_id: str) -> str:
        """The full id of the run ``run_id`` names exactly or as a unique prefix."""
        if self._reads().get_run(run_id) is not None:
            return run_id
        ids = [s.experiment_id for s in self.list_experiments_sync()]
        matches = [i for i in ids if i.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            import difflib

            # A mistyped prefix is most like the same-length start of the id it meant.
            close = difflib.get_close_matches(run_id, {i[: len(run_id)] for i in ids}, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise RunNotFoundError(
                f"no run {run_id!r} in backend {self.backend!r}: {hint}list runs with `mltrack ls`"
            )
        raise RunNotFoundError(
            f"run id prefix {run_id!r} is ambiguous, it matches: {', '.join(sorted(matches)[:10])}"
        )

    def get_experiment_sync(self, run_id: str) -> ExperimentSummary:
        """The run with this id (or unique id prefix) (blocking form)."""
        summary = self._reads().get_run(run_id)
        if summary is None:
            summary = self._reads().get_run(self.resolve_id(run_id))
        if summary is None:
            raise RunNotFoundError(f"no run {run_id!r} in backend {self.backend!r}")
        return summary

    async def get_experiment(self, run_id: str) -> ExperimentSummary:
        """The run with this id (or unique id prefix); raises ``RunNotFoundError``."""
        return await self._in_thread(self.get_experiment_sync, run_id)

    def get_experiment_metrics_sync(self, run_id: str, names: Sequence[str] | None = None) -> MetricHistory:
        """The run's metric histories (blocking form)."""
        full_id = self.get_experiment_sync(run_id).experiment_id
        series = self._reads().get_metrics(full_id, None if names is None else list(names))
        if series is None:
            raise RunNotFoundError(f"no run {run_id!r} in backend {self.backend!r}")
        return MetricHistory(full_id, series)

    async def get_experiment_metrics(self, run_id: str, names: Sequence[str] | None = None) -> MetricHistory:
        """The run's metric histories, all metrics or just ``names``."""
        return await self._in_thread(self.get_experiment_metrics_sync, run_id, names)

    def list_artifacts_sync(self, run_id: str) -> list[ModelArtifact]:
        """The run's stored files (blocking form)."""
        full_id = self.get_experiment_sync(run_id).experiment_id
        return list(self._reads().list_artifacts(full_id) or [])

    async def list_artifacts(self, run_id: str) -> list[ModelArtifact]:
        """The run's stored files, each with a readable ``file_path``."""
        return await self._in_thread(self.list_artifacts_sync, run_id)

    def compare_experiments_sync(
        self, run_ids: Sequence[str], metrics: Sequence[str] | None = None
    ) -> Comparison:
        """Compare runs (blocking form)."""
        runs = [self.get_experiment_sync(r) for r in run_ids]
        names = list(metrics) if metrics else sorted({m for r in runs for m in r.final_metrics})
        keys = sorted({k for r in runs for k in r.config})
        differing = {}
        for key in keys:
            values = {r.experiment_id: r.config.get(key) for r in runs}
            if len({repr(v) for v in values.values()}) > 1:
                differing[key] = values
        finals = {
            r.experiment_id: {m: r.final_metrics[m] for m in names if m in r.final_metrics} for r in runs
        }
        best: dict[str, str] = {}
        ties: dict[str, list[str]] = {}
        for m in names:
            direction = metric_direction(m)
            scored = [(f[m], rid) for rid, f in finals.items() if m in f and f[m] == f[m]]  # NaN never wins
            if not scored or direction == 0:
                continue
            top = (min if direction < 0 else max)(value for value, _ in scored)
            winners = [rid for value, rid in scored if value == top]
            if len(winners) == 1:
                best[m] = winners[0]
            else:
                ties[m] = winners
        return Comparison(runs, names, differing, finals, best, ties)

    async def compare_experiments(
        self, run_ids: Sequence[str], metrics: Sequence[str] | None = None
    ) -> Comparison:
        """Compare runs: differing parameters, final metrics and the best run per metric."""
        return await self._in_thread(self.compare_experiments_sync, run_ids, metrics)

    def delete_experiment_sync(self, run_id: str) -> None:
        """Delete a run from every active backend (blocking form)."""
        full_id = self.get_experiment_sync(run_id).experiment_id
        for target in self._backends.write_targets:
            target.call("mltrack_delete_run", run_id=full_id)

    async def delete_experiment(self, run_id: str) -> None:
        """Delete a run and its artifacts from every active backend."""
        await self._in_thread(self.delete_experiment_sync, run_id)

    def write_run_sync(
        self,
        summary: ExperimentSummary,
        series: Iterable[MetricSeries] = (),
        artifacts: Iterable[ModelArtifact] = (),
        *,
        replace: bool = False,
    ) -> int:
        """Write a whole finished run, as given, into the primary backend; returns the points written.

        The run keeps everything ``summary`` says: id, experiment, name, description, config,
        tags, start and end time, status and final metrics; each point keeps its step, value,
        context and time (a series without times gives its points the run's start time); each
        artifact its type, metadata and checksum. This is how runs move between stores (see
        :meth:`copy_to_sync`) or are imported from elsewhere: what reads back from one backend
        writes into another unchanged. ``replace=True`` first deletes a run with this id (an
        incomplete earlier copy). Write errors are raised, never retried or skipped: a partial
        run is for the caller to see. A RUNNING status is refused: a run still being tracked
        is written by its tracker.
        """
        if summary.status is ExperimentStatus.RUNNING:
            raise RunStateError(
                f"run {summary.experiment_id} is still RUNNING: write it once it has finished"
            )
        if replace:
            self._write("mltrack_delete_run", run_id=summary.experiment_id)
        run = ExperimentRun(
            id=summary.experiment_id,
            experiment_name=summary.experiment_name or summary.name,
            config=summary.config,
            start_time=summary.start_time,
            name=summary.name,
            tags=summary.tags,
            description=summary.description,
        )
        self._write("mltrack_create_run", run=run)
        points = 0
        for one in series:
            for batch in _batches(one, summary.start_time.timestamp()):
                self._write("mltrack_log_metrics", run_id=run.id, batch=batch)
                points += len(batch)
        for artifact in artifacts:
            self._write("mltrack_log_artifact", run_id=run.id, artifact=artifact)
        self._write(
            "mltrack_finish_run",
            run_id=run.id,
            status=summary.status,
            end_time=summary.end_time or datetime.now(timezone.utc),
            final_metrics=dict(summary.final_metrics),
        )
        return points

    async def write_run(
        self,
        summary: ExperimentSummary,
        series: Iterable[MetricSeries] = (),
        artifacts: Iterable[ModelArtifact] = (),
        *,
        replace: bool = False,
    ) -> int:
        """Write a whole finished run into the primary backend (see :meth:`write_run_sync`)."""
        return await self._in_thread(self.write_run_sync, summary, series, artifacts, replace=replace)

    def _write(self, hook: str, **kwargs: Any) -> Any:
        """Call a write hook on the primary backend only, errors raised."""
        return self._backends.write_targets[0].call(hook, **kwargs)

    def copy_to_sync(self, target: ExperimentRepository, run_ids: Iterable[str] | None = None) -> CopyReport:
        """Copy runs (default: all) into ``target``'s primary backend, idempotently (blocking form).

        See :mod:`mltrack.copying`: ids, times, status, config, tags, metrics and artifacts are
        kept; runs the target already holds complete are skipped; RUNNING runs are not copied.
        """
        return copy_runs(self, target, run_ids)

    async def copy_to(self, target: ExperimentRepository, run_ids: Iterable[str] | None = None) -> CopyReport:
        """Copy runs (default: all) into ``target``'s primary backend, idempotently."""
        return await self._in_thread(self.copy_to_sync, target, run_ids)


def _batches(series: MetricSeries, default_time: float) -> Iterator[MetricBatch]:
    """The series in batches of at most :data:`BATCH_POINTS`; points without a time get ``default_time``."""
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
