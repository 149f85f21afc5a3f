"""The contract between mltrack and its plugins.

Three kinds of plugin implement these hooks:

* A **plugin module** (found through the ``mltrack`` entry-point group) implements
  :func:`mltrack_register_backends` to announce the backends it provides, by name. It must
  not import its store's library at import time: the backend factory does that, lazily.
* A **backend** is the object a registered factory returns. mltrack registers it with the
  plugin manager when it is selected; it implements the write hooks (stores data), the read
  hooks (answers queries) and :func:`mltrack_health`.
* An **observer** (console progress, live streaming, ...) is a plugin module that implements
  write hooks only; it sees every write and stores nothing mltrack reads back.

Write hooks are called once per active backend (each in isolation, so one failing store
does not stop another) and once for all observers. Read hooks are ``firstresult`` and asked
of the primary backend only: the first name in ``ML_TRACKING_BACKEND``.

Run ids are chosen by mltrack (24 lowercase hex characters) before any backend sees the
run, so every backend of a fan-out stores the same run under the same id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from mltrack.models import (
        ExperimentRun,
        ExperimentStatus,
        ExperimentSummary,
        HealthStatus,
        MetricBatch,
        MetricSeries,
        ModelArtifact,
        RunFilter,
        UiHandle,
    )

PROJECT = "mltrack"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

RegisterBackend = Callable[..., None]
"""``register(name, factory, *, persistent=True, description="", out_of_process=False, preflight=None,
options=None, backend_class=None)``.

See :func:`mltrack_register_backends`."""


# --- discovery --------------------------------------------------------------------------


@hookspec
def mltrack_register_backends(register: RegisterBackend) -> None:
    """Announce the backends this plugin provides. Since 0.1.

    Call ``register(name, factory, persistent=True, description="", out_of_process=False,
    preflight=None)`` once per backend.
    ``factory(config: BackendConfig) -> object`` builds the backend object (whose methods
    are ``@hookimpl`` implementations of the write, read and health hooks); it is called
    only when the backend is selected, so heavy imports belong inside it. When
    ``config.must_exist`` is set (the store is opened for reading, e.g. by the ``mltrack``
    command), the factory must not create a store: where there is none it raises
    :class:`mltrack.errors.StoreNotFoundError` naming the path and the setting. ``persistent``
    says whether data survives the process (``memory`` does not, so it is never chosen by
    default). ``out_of_process=True`` asks for a separate writer process: the training
    process then never imports the store, and a killed training process loses nothing it
    already handed over. ``preflight(config: BackendConfig) -> None``, if given, runs in the
    training process before every new run and raises :class:`mltrack.errors.BackendError`
    when the store cannot take one (read-only, full, missing): writes are asynchronous, so
    this is how ``create_run`` can fail early with a clear error. It must be cheap (a few
    system calls) and must not import the store. ``options``, an attrs class whose fields are
    the backend's options (name, type, default; ``metadata={"help": ...}`` for a line of
    help), makes an unknown or ill-typed option an error listing the valid ones
    (:func:`mltrack.config.parse_backend_options`); without it the backend takes any option.
    ``backend_class`` (a class or ``"module:Class"``, imported only by ``mltrack backends``)
    lists the backend's hooks when the factory is a function. Called for every plugin: a
    plugin may register zero or many backends.
    """


# --- writes: every active backend, and every observer -----------------------------------


@hookspec
def mltrack_create_run(run: ExperimentRun) -> None:
    """Create ``run`` in the store: its id, experiment, name, config, tags and start time. Since 0.1.

    Called for every active backend and observer, before any other write for this run.
    """


@hookspec
def mltrack_log_metrics(run_id: str, batch: MetricBatch) -> None:
    """Store a batch of metric points (columns; see :class:`MetricBatch`). Since 0.1.

    Points arrive in batches, never one by one: a backend should write a batch with its
    cheapest bulk path. A point logged twice at the same step replaces the first.
    """


@hookspec
def mltrack_log_params(run_id: str, params: Mapping[str, Any]) -> None:
    """Merge ``params`` (plain JSON-like values) into the run's config. Since 0.1."""


@hookspec
def mltrack_log_artifact(run_id: str, artifact: ModelArtifact) -> None:
    """Store a copy of the file at ``artifact.file_path`` with its type, size, sha256 and metadata. Since 0.1.

    The file must be copied before this hook returns: the caller may overwrite it next.
    """


@hookspec
def mltrack_set_tags(run_id: str, tags: Sequence[str]) -> None:
    """Add ``tags`` to the run. Since 0.1."""


@hookspec
def mltrack_finish_run(
    run_id: str,
    status: ExperimentStatus,
    end_time: datetime,
    final_metrics: Mapping[str, float],
) -> None:
    """Mark the run finished with ``status`` at ``end_time``, storing its ``final_metrics``. Since 0.1.

    Every metric logged for the run has been handed to :func:`mltrack_log_metrics` first.
    """


@hookspec
def mltrack_set_state(run_id: str, values: Mapping[str, Any]) -> None:
    """Merge ``values`` into the run's live session state (phase, progress, ETA, ...). Since 0.1.

    From ``run.set_state(**values)`` and ``run.progress(done, total)`` (which sets
    ``progress_done``, ``progress_total`` and ``eta_seconds``): plain JSON values, in order
    with the run's other writes. State is temporary, for observers that publish it live
    (mltrack-redis); a backend may ignore it, and none is required to implement it.
    """


@hookspec
def mltrack_resume_run(run_id: str) -> None:
    """Reopen the stored run ``run_id`` to log into it again: status RUNNING, no end time. Since 0.1.

    From ``start_run(resume=...)`` / ``create_run(resume=...)``, in place of
    :func:`mltrack_create_run`, for a run that is finished or whose writer died (mltrack checks
    both, and that the run exists, before calling). Record this process as the run's writer,
    as ``mltrack_create_run`` does, so the run reads CRASHED if it dies too; keep everything
    stored (config, tags, start time, metrics, artifacts). The points, params and tags that
    follow are written as for any open run; the run's ``mltrack:resumed=<n>`` tag comes through
    :func:`mltrack_set_tags`. Optional for a backend (not in the ``mltrack.Backend`` Protocol):
    resuming a run on a backend without it is an error naming the backend and this hook.
    """


@hookspec
def mltrack_delete_run(run_id: str) -> None:
    """Delete the run and everything stored for it, artifacts included. Since 0.1."""


# --- reads: the primary backend answers ---------------------------------------------------


@hookspec(firstresult=True)
def mltrack_list_runs(run_filter: RunFilter) -> list[ExperimentSummary] | None:
    """Return the runs matching ``run_filter``, newest first, at most ``run_filter.limit``. Since 0.1.

    Every run must be visible, finished or still running, the moment it was created, in any
    process. A run whose writer died without finishing it reads as CRASHED.
    """


@hookspec(firstresult=True)
def mltrack_get_run(run_id: str) -> ExperimentSummary | None:
    """Return the run with exactly this id, or None if there is none. Since 0.1."""


@hookspec(firstresult=True)
def mltrack_get_metrics(run_id: str, names: Sequence[str] | None) -> list[MetricSeries] | None:
    """Return the run's metric histories (all of them when ``names`` is None), each sorted by step. Since 0.1.

    Return None if the run does not exist, an empty list if it has no such metrics.
    """


@hookspec(firstresult=True)
def mltrack_list_artifacts(run_id: str) -> list[ModelArtifact] | None:
    """Return the run's artifacts, each with ``file_path`` pointing at a readable stored copy. Since 0.1."""


# --- user interface ---------------------------------------------------------------------


@hookspec(firstresult=True)
def mltrack_open_ui(host: str, port: int | None) -> UiHandle | None:
    """Start the store's own web UI on ``host``:``port`` (None: the store's default). Since 0.1.

    Return a :class:`mltrack.models.UiHandle` (its URL and how to stop it) once the UI
    answers, or None if this backend has no UI. Asked of the primary backend only.
    """


# --- health -------------------------------------------------------------------------------


@hookspec
def mltrack_health() -> HealthStatus:
    """Report whether the store works: reachable, writable, versions, index state. Since 0.1.

    Called on every active backend; the results are combined into one ``HealthStatus``.
    It must return, not raise, when the store is down: that is what it is for.
    """


# --- command line -------------------------------------------------------------------------


@hookspec
def mltrack_register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``mltrack`` command: ``@cli.command()`` on the group given. Since 0.1.

    Called once per ``mltrack`` invocation, after the entry-point plugins have loaded, on
    every plugin that implements it, each with a group of its own (so mltrack knows whose
    command is whose). A command named like a built-in one (or like another plugin's) is an
    error naming both; a hook that raises is reported on stderr with the plugin's name and
    the other commands still work. ``mltrack --help`` does not load plugins, to stay fast:
    ``mltrack backends`` lists each plugin's commands. Import heavy libraries inside the
    command, not in the hook: the hook runs for every ``mltrack`` command.
    """


__all__ = [
    "PROJECT",
    "hookimpl",
    "hookspec",
    "mltrack_create_run",
    "mltrack_delete_run",
    "mltrack_finish_run",
    "mltrack_get_metrics",
    "mltrack_get_run",
    "mltrack_health",
    "mltrack_list_artifacts",
    "mltrack_list_runs",
    "mltrack_log_artifact",
    "mltrack_log_metrics",
    "mltrack_log_params",
    "mltrack_open_ui",
    "mltrack_register_backends",
    "mltrack_register_commands",
    "mltrack_resume_run",
    "mltrack_set_state",
    "mltrack_set_tags",
]
