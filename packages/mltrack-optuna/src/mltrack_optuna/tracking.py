"""Track an Optuna study with mltrack: a parent run per study, a run per trial opened when it starts.

::

    import optuna
    import mltrack_optuna

    study = optuna.create_study(study_name="lr-sweep", storage="sqlite:///optuna.db", load_if_exists=True)
    with mltrack_optuna.track_study(study) as tracker:
        study.optimize(tracker.objective(objective), n_trials=20)

Optuna's own MLflow callback writes a trial only once it has ended, and W&B's puts a whole
study into one run; here a trial's run exists (RUNNING) from the moment the trial starts,
its ``trial.report`` values stream into it, and it ends with the trial's state.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import optuna
from optuna.study import StudyDirection

from mltrack.config import current_config
from mltrack.errors import RunNotFoundError
from mltrack.factory import experiment_repository, tracking_session
from mltrack.models import ExperimentStatus
from mltrack.tracker import ActiveRun, new_run_id

__all__ = [
    "PARENT_RUN_ATTR",
    "PRUNED_TAG",
    "RUN_ID_ATTR",
    "StudyTracker",
    "TrackingFailureWarning",
    "optimize",
    "track_study",
    "trial_run",
]

RUN_ID_ATTR = "mltrack:run_id"
"""Key of the trial's system and user attributes holding the id of its mltrack run."""
PARENT_RUN_ATTR = "mltrack:parent_run_id"
"""Key of the study's user attributes holding the id of its parent run (reused on resume)."""
PRUNED_TAG = "optuna:pruned"
"""Tag of the run of a pruned trial; such a run ends INTERRUPTED (mltrack has no PRUNED status)."""

# How long opening a trial's run waits for the store to show it (it is written asynchronously).
_VISIBLE_TIMEOUT = 10.0

# How long a worker that wrote the study's parent run id waits before reading back the one kept:
# far longer than the two storage calls of another worker that raced it.
_SETTLE_SECONDS = 0.5
# How long a worker waits for the parent run another worker claimed to show in the store
# before opening it itself (a study whose parent lives in another store waits this once).
_PARENT_WAIT_SECONDS = 15.0

# Runs of the trials running in this process, by id(trial), for trial_run().
_runs: dict[int, ActiveRun] = {}
_runs_lock = threading.Lock()


class TrackingFailureWarning(UserWarning):
    """Tracking a trial or study failed; the optimization went on without it."""


def trial_run(trial: optuna.Trial) -> ActiveRun:
    """The mltrack run of ``trial`` (inside a tracked objective), to log more metrics or artifacts into."""
    with _runs_lock:
        run = _runs.get(id(trial))
    if run is None:
        raise LookupError(
            f"trial {trial.number} has no mltrack run: wrap the objective with "
            "track_study(study).objective(objective) (or use mltrack_optuna.optimize), "
            "and call trial_run() from inside it"
        )
    return run


def _run_exists(run_id: str) -> bool:
    """Whether the configured store holds the run ``run_id``."""
    try:
        experiment_repository().get_experiment_sync(run_id)
    except RunNotFoundError:
        return False
    return True


def _claim_parent_id(study: optuna.Study, candidate: str) -> tuple[str, bool]:
    """Store ``candidate`` as the study's parent run id unless one is stored: (the id kept, whether ours).

    On an RDB storage the claim is an INSERT that the unique (study, key) index lets only one
    worker win, however many race; elsewhere (no compare-and-set) the writer waits until any
    racing write has landed, then everyone takes the one the storage kept.
    """
    storage = getattr(study._storage, "_backend", study._storage)
    if isinstance(storage, optuna.storages.RDBStorage):
        import sqlalchemy.exc
        from optuna.storages._rdb import models

        session = storage.scoped_session()
        try:
            session.add(
                models.StudyUserAttributeModel(
                    study_id=study._study_id, key=PARENT_RUN_ATTR, value_json=json.dumps(candidate)
                )
            )
            session.commit()
        except sqlalchemy.exc.IntegrityError:
            session.rollback()  # another worker's claim came first
        finally:
            storage.scoped_session.remove()
        kept = study.user_attrs.get(PARENT_RUN_ATTR)
        if isinstance(kept, str):
            return kept, kept == candidate
    study.set_user_attr(PARENT_RUN_ATTR, candidate)
    time.sleep(_SETTLE_SECONDS)
    kept = study.user_attrs.get(PARENT_RUN_ATTR)
    assert isinstance(kept, str)
    return kept, kept == candidate


def _wait_for_run(run_id: str, timeout: float) -> bool:
    """Wait until the store shows run ``run_id`` (another worker is creating it); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if _run_exists(run_id):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)


def _status_tags(state: str) -> list[str]:
    return [f"optuna:state={state}"] + ([PRUNED_TAG] if state == "PRUNED" else [])


class StudyTracker:
    """Tracks one study: its parent run, and a run per trial of the objectives it wraps.

    The parent run (experiment ``experiment_name``, default the study's name) is opened on
    entering the ``with`` block (or by the first trial) and its id kept in the study's user
    attribute ``mltrack:parent_run_id``: a study loaded again from the same storage, in
    this process or another, carries on in the same parent run. While trials end it logs
    ``trial_value`` and ``best_value`` at step = trial number; on leaving it ends with the
    best value, the best parameters (as ``best_params/<name>`` final metrics and in its
    config) and tags naming the best trial and its run.

    Each trial's run is opened when the trial starts, with the tags ``optuna:study=<name>``,
    ``optuna:trial=<number>`` and ``optuna:parent=<parent run id>``, and is visible to
    readers (``mltrack ls``) before the objective runs. Its config is the trial's params as
    they are suggested; every ``trial.report(value, step)`` is logged as the metric
    ``metric`` at ``step``. It ends COMPLETED with the objective value as final metric
    ``metric`` (``metric_<i>`` for several objectives), FAILED when the objective raised or
    returned a value Optuna refuses, or INTERRUPTED with the tag ``optuna:pruned`` when the
    trial was pruned; each also carries ``optuna:state=COMPLETE|PRUNED|FAIL``. The run id
    is kept in the trial's system and user attributes ``mltrack:run_id``.

    Tracking failures never stop the study: they are warned about (:class:`TrackingFailureWarning`)
    unless mltrack is in strict mode, where they raise.
    """

    def __init__(
        self,
        study: optuna.Study,
        *,
        experiment_name: str | None = None,
        metric: str = "value",
        tags: Iterable[str] = (),
    ) -> None:
        self.study = study
        self.experiment_name = experiment_name or study.study_name
        self.metric = metric
        self.tags = list(tags)
        self.parent: ActiveRun | None = None
        """The parent run while it is open in this process."""
        self._lock = threading.RLock()
        self._warned = False

    # --- the parent run ---------------------------------------------------------------

    @property
    def parent_run_id(self) -> str | None:
        """The id of the study's parent run, as stored in the study (None before the first one)."""
        value = self.study.user_attrs.get(PARENT_RUN_ATTR)
        return value if isinstance(value, str) else None

    def open(self) -> ActiveRun:
        """Open the parent run: the study's own if it has one already (a resumed study), else a new one."""
        with self._lock:
            if self.parent is not None:
                return self.parent
            run_id = self.parent_run_id
            stored = run_id is not None and _run_exists(run_id)
            creator = False
            if run_id is None:
                # Workers starting at once each propose an id; one is kept (see _claim_parent_id).
                run_id, creator = _claim_parent_id(self.study, new_run_id())
            if not stored and not creator:
                # Another worker claimed the id and is creating the run: opening it before it
                # exists would create a second one in stores that cannot tell (MLflow).
                stored = _wait_for_run(run_id, _PARENT_WAIT_SECONDS)
            tags = [*self.tags, "optuna:parent", f"optuna:study={self.study.study_name}"]
            config = {
                "study_name": self.study.study_name,
                "directions": [d.name for d in self.study.directions],
                "sampler": type(self.study.sampler).__name__,
                "pruner": type(self.study.pruner).__name__,
            }
            session = tracking_session()
            run = session.create_run(
                self.experiment_name,
                config,
                name=self.study.study_name,
                tags=() if stored else tags,  # a resumed run keeps its tags (Aim warns of each repeat)
                run_id=run_id,
            )
            self.parent = ActiveRun(session, run)
            return self.parent

    def finish(self, status: ExperimentStatus | str = ExperimentStatus.COMPLETED) -> None:
        """End the parent run with the study's best value and params (if any) and trial counts."""
        with self._lock:
            parent, self.parent = self.parent, None
        if parent is None:
            return
        trials = self.study.get_trials(deepcopy=False)
        counts = {
            state: sum(t.state.name == state for t in trials) for state in ("COMPLETE", "PRUNED", "FAIL")
        }
        finals: dict[str, float] = {
            "n_trials": len(trials),
            "n_complete": counts["COMPLETE"],
            "n_pruned": counts["PRUNED"],
            "n_failed": counts["FAIL"],
        }
        best = self._best_trial()
        if best is not None and best.value is not None:
            finals["best_value"] = best.value
            finals["best_trial"] = best.number
            finals.update(
                {
                    f"best_params/{name}": value
                    for name, value in best.params.items()
                    if isinstance(value, int | float) and not isinstance(value, bool)
                }
            )
            self._safely("recording the best trial", parent.log_params, {"best_params": best.params})
            tags = [f"optuna:best-trial={best.number}"]
            best_run = best.user_attrs.get(RUN_ID_ATTR)
            if isinstance(best_run, str):
                tags.append(f"optuna:best-run={best_run}")
            self._safely("tagging the best trial", parent.set_tags, tags)
        self._safely("finishing the parent run", parent.finish, status, finals)

    def _best_trial(self) -> optuna.trial.FrozenTrial | None:
        if len(self.study.directions) != 1:
            return None
        try:
            return self.study.best_trial
        except ValueError:  # no trial completed
            return None

    def __enter__(self) -> StudyTracker:
        self._safely("opening the parent run", self.open)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            status = ExperimentStatus.COMPLETED
        elif issubclass(exc_type, KeyboardInterrupt):
            status = ExperimentStatus.INTERRUPTED
        else:
            status = ExperimentStatus.FAILED
        self.finish(status)

    # --- trial runs -------------------------------------------------------------------

    def objective(self, func: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        """``func`` with each call tracked as a run of its own, opened before ``func`` starts."""

        @functools.wraps(func)
        def tracked(trial: optuna.Trial) -> Any:
            run = self._start_trial(trial)
            if run is None:
                return func(trial)
            with _runs_lock:
                _runs[id(trial)] = run
            try:
                value = func(trial)
            except optuna.TrialPruned:
                self._end_trial(trial, run, "PRUNED")
                raise
            except BaseException as exc:
                self._end_trial(trial, run, "FAIL", error=exc)
                raise
            finally:
                with _runs_lock:
                    _runs.pop(id(trial), None)
            values = self._accepted_values(value)
            self._end_trial(trial, run, "COMPLETE" if values is not None else "FAIL", values=values)
            return value

        return tracked

    def _start_trial(self, trial: optuna.Trial) -> ActiveRun | None:
        parent = self._safely("opening the parent run", self.open)
        # Linked even when this process could not open the parent (Aim lets one process write a run).
        parent_id = self.parent_run_id if parent is None else parent.id
        parent_tag = [] if parent_id is None else [f"optuna:parent={parent_id}"]
        tags = [
            *self.tags,
            f"optuna:study={self.study.study_name}",
            f"optuna:trial={trial.number}",
            *parent_tag,
        ]
        retried = trial.storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")
        if retried is not None:  # RetryFailedTrialCallback's retry of an earlier trial
            tags.append(f"optuna:retry-of={retried}")
        run = self._safely(
            "opening the trial's run",
            functools.partial(
                tracking_session().create_run,
                self.experiment_name,
                dict(trial.params),
                name=f"{self.study.study_name}-trial-{trial.number}",
                tags=tags,
            ),
        )
        if run is None:
            return None
        active = ActiveRun(tracking_session(), run)
        trial.storage.set_trial_system_attr(trial._trial_id, RUN_ID_ATTR, active.id)
        trial.set_user_attr(RUN_ID_ATTR, active.id)
        self._patch_trial(trial, active)
        # Written asynchronously: wait for it, so the trial is listed as RUNNING while it runs.
        self._safely("showing the trial's run", tracking_session().flush, _VISIBLE_TIMEOUT)
        return active

    def _patch_trial(self, trial: optuna.Trial, run: ActiveRun) -> None:
        """Route this trial's ``report`` and ``suggest_*`` calls into its run as well."""
        report = trial.report

        def tracked_report(value: float, step: int) -> None:
            report(value, step)
            self._safely("logging a reported value", run.log_metric, self.metric, value, step)

        trial.report = tracked_report  # type: ignore[method-assign]

        for name in ("suggest_float", "suggest_int", "suggest_categorical"):
            suggest = getattr(trial, name)

            def tracked_suggest(*args: Any, _suggest: Any = suggest, **kwargs: Any) -> Any:
                value = _suggest(*args, **kwargs)
                param = args[0] if args else kwargs["name"]
                self._safely("logging a parameter", run.log_params, {param: value})
                return value

            setattr(trial, name, tracked_suggest)

    def _accepted_values(self, value: Any) -> list[float] | None:
        """The objective's value(s) if Optuna will COMPLETE the trial with them, else None."""
        values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        if len(values) != len(self.study.directions):
            return None
        try:
            floats = [float(v) for v in values]
        except (TypeError, ValueError):
            return None
        return None if any(math.isnan(v) for v in floats) else floats

    def _end_trial(
        self,
        trial: optuna.Trial,
        run: ActiveRun,
        state: str,
        *,
        values: list[float] | None = None,
        error: BaseException | None = None,
    ) -> None:
        status = {
            "COMPLETE": ExperimentStatus.COMPLETED,
            "PRUNED": ExperimentStatus.INTERRUPTED,
            "FAIL": ExperimentStatus.FAILED,
        }[state]
        if isinstance(error, KeyboardInterrupt):
            status = ExperimentStatus.INTERRUPTED
        finals: dict[str, float] = {}
        if values is not None:
            if len(values) == 1:
                finals[self.metric] = values[0]
            else:
                finals.update({f"{self.metric}_{i}": v for i, v in enumerate(values)})
        self._safely("logging the trial's params", run.log_params, dict(trial.params))
        if error is not None:
            message = "".join(traceback.format_exception_only(type(error), error)).strip()
            self._safely("recording the trial's error", run.log_params, {"error": message})
        self._safely("tagging the trial's run", run.set_tags, _status_tags(state))
        self._safely("finishing the trial's run", run.finish, status, finals)
        self._log_progress(trial.number, values)

    def _log_progress(self, number: int, values: list[float] | None) -> None:
        """Log the finished trial's value and the best so far into the parent run."""
        parent = self.parent
        if parent is None or values is None or len(values) != 1:
            return
        metrics = {"trial_value": values[0]}
        best = self._best_value(values[0])
        if best is not None:
            metrics["best_value"] = best
        self._safely("logging into the parent run", parent.log_metrics, metrics, number)

    def _best_value(self, latest: float) -> float | None:
        """The best value of the study counting ``latest`` (Optuna has not stored it yet)."""
        best = self._best_trial()
        if best is None or best.value is None:
            return latest
        if self.study.direction == StudyDirection.MAXIMIZE:
            return max(best.value, latest)
        return min(best.value, latest)

    # --- failures ---------------------------------------------------------------------

    def _safely(self, action: str, func: Callable[..., Any], *args: Any) -> Any:
        """Call ``func``; a failure is warned about (raised in strict mode) and returns None."""
        try:
            return func(*args)
        except Exception as exc:
            if current_config().strict:
                raise
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"mltrack_optuna: {action} failed: {type(exc).__name__}: {exc}. The study goes on; "
                    "later tracking failures of this study are not warned about again.",
                    TrackingFailureWarning,
                    stacklevel=3,
                )
            return None


def track_study(
    study: optuna.Study,
    *,
    experiment_name: str | None = None,
    metric: str = "value",
    tags: Iterable[str] = (),
) -> StudyTracker:
    """A :class:`StudyTracker` for ``study``: ``with track_study(study) as t: study.optimize(t.objective(f))``."""
    return StudyTracker(study, experiment_name=experiment_name, metric=metric, tags=tags)


def optimize(
    study: optuna.Study,
    func: Callable[[optuna.Trial], Any],
    *,
    experiment_name: str | None = None,
    metric: str = "value",
    tags: Iterable[str] = (),
    **optimize_kwargs: Any,
) -> StudyTracker:
    """``study.optimize(func, **optimize_kwargs)`` with the study and each trial tracked; returns the tracker."""
    with track_study(study, experiment_name=experiment_name, metric=metric, tags=tags) as tracker:
        study.optimize(tracker.objective(func), **optimize_kwargs)
    return tracker
