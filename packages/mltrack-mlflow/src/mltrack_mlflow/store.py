"""Access to one MLflow tracking store: opening it, experiments, finding runs, tags and params.

:class:`StoreAccess` owns the MLflow store object and what is worth remembering about it
(experiment ids by name, MLflow run ids by mltrack run id), so the backend's hooks speak in
mltrack's terms. MLflow's store itself is opened by :mod:`mltrack_mlflow.internals`. Reads of a tracking
server go through :mod:`mltrack_mlflow.rest` instead, so listing runs never imports mlflow.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from mltrack_mlflow import internals, rest
from mltrack_mlflow import mapping as m
from mltrack_mlflow.settings import MlflowSettings

__all__ = [
    "MAX_PARAMS_PER_CALL",
    "MAX_TAGS_PER_CALL",
    "SEARCH_PAGE",
    "OpenRun",
    "StoreAccess",
    "chunks",
    "run_tags",
]

MAX_PARAMS_PER_CALL = 100
MAX_TAGS_PER_CALL = 20  # 100 is MLflow's limit; 20 long tags keep a REST request far under its 1 MB
SEARCH_PAGE = 1000
_HEX_ID = re.compile(r"^[0-9a-f]{1,64}$")
_MLFLOW_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size`` (MLflow's per-call limits)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


@attrs.define
class OpenRun:
    """What the backend knows of a run it writes: MLflow id, config, keys already mapped."""

    mlflow_id: str
    config: dict[str, Any]
    artifact_uri: str
    params: set[str] = attrs.field(factory=set)
    mapped_keys: set[str] = attrs.field(factory=set)


def run_tags(tags: Mapping[str, str]) -> list[Any]:
    """MLflow ``RunTag`` entities of ``tags`` (imports mlflow: writes only)."""
    from mlflow.entities import RunTag

    return [RunTag(k, v) for k, v in tags.items()]


class StoreAccess:
    """One MLflow tracking store, opened on first use, with mltrack's lookups over it."""

    def __init__(self, settings: MlflowSettings, lock: threading.RLock) -> None:
        self.settings = settings
        self._lock = lock
        self._store_obj: Any = None
        self._reads_obj: Any = None
        self.ids: dict[str, str] = {}  # mltrack run id -> MLflow run id
        self.experiments: dict[str, str] = {}  # experiment name -> MLflow experiment id

    @property
    def store(self) -> Any:
        """MLflow's tracking store, opened on first use (so health works when it cannot open)."""
        with self._lock:
            if self._store_obj is None:
                with internals.translate("cannot open the tracking store", self.settings.tracking_uri):
                    self._store_obj = internals.open_store(
                        self.settings.tracking_uri,
                        Path(self.settings.artifacts_dir).as_uri(),
                        remote=self.settings.is_remote,
                        db_path=self.settings.db_path,
                    )
            return self._store_obj

    @property
    def reads(self) -> Any:
        """What reads go through: a server's REST API (mlflow not imported), else MLflow's store."""
        with self._lock:
            if self._reads_obj is None:
                use_rest = self.settings.is_remote and rest.usable()
                self._reads_obj = rest.RestReads(self.settings.tracking_uri) if use_rest else self.store
            return self._reads_obj

    @property
    def is_sqlite(self) -> bool:
        """True for a local SQLite database (where the bulk SQL paths apply)."""
        return self.settings.db_path is not None or self.settings.tracking_uri.startswith("sqlite:")

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created (or restored, if deleted) on demand."""
        cached = self.experiments.get(name)
        if cached is not None:
            return cached
        store = self.store
        with internals.translate(f"experiment {name!r}", self.settings.tracking_uri):
            experiment = store.get_experiment_by_name(name)
            if experiment is None:
                from mlflow.entities import ExperimentTag

                try:
                    # MLflow's UI opens an experiment of this kind on its runs table and charts.
                    kind = ExperimentTag(m.EXPERIMENT_KIND_TAG, m.EXPERIMENT_KIND)
                    experiment_id = str(store.create_experiment(name, None, [kind]))
                except Exception as exc:
                    if (
                        not internals.mlflow_error(exc)
                        or getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS"
                    ):
                        raise
                    experiment = store.get_experiment_by_name(name)  # another process made it
                    if experiment is None:
                        raise
                    experiment_id = str(experiment.experiment_id)
            else:
                experiment_id = str(experiment.experiment_id)
                if experiment.lifecycle_stage == "deleted":
                    store.restore_experiment(experiment_id)
        self.experiments[name] = experiment_id
        return experiment_id

    def experiment_names(self) -> dict[str, str]:
        """Every active experiment, id -> name."""
        out: dict[str, str] = {}
        token = None
        while True:
            page = self.reads.search_experiments(
                view_type=rest.ACTIVE_ONLY, max_results=SEARCH_PAGE, page_token=token
            )
            for experiment in page:
                out[str(experiment.experiment_id)] = experiment.name
            token = page.token
            if not token:
                return out

    def search(
        self, experiment_ids: list[str], filter_string: str, page_size: int = SEARCH_PAGE
    ) -> Iterator[Any]:
        """Active runs of these experiments matching ``filter_string``, newest first, page by page."""
        if not experiment_ids:
            return
        token = None
        while True:
            page = self.reads.search_runs(
                experiment_ids,
                filter_string,
                rest.ACTIVE_ONLY,
                max_results=page_size,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            yield from page
            token = page.token
            if not token:
                return

    def find(self, run_id: str) -> Any | None:
        """The active MLflow run of mltrack run ``run_id`` (or of MLflow run id ``run_id``), or None."""
        if not _HEX_ID.match(run_id):
            return None
        cached = self.ids.get(run_id)
        if cached is not None:
            run = self.get_run(cached)
            if run is not None and run.info.lifecycle_stage == "active":
                return run
            self.ids.pop(run_id, None)
        filter_string = f"tags.`{m.RUN_ID_TAG}` = '{run_id}'"
        for run in self.search(list(self.experiment_names()), filter_string, page_size=2):
            self.ids[run_id] = run.info.run_id
            return run
        if _MLFLOW_RUN_ID.match(run_id):  # a run MLflow wrote itself: its own id
            run = self.get_run(run_id)
            if run is not None and run.info.lifecycle_stage == "active" and m.RUN_ID_TAG not in run.data.tags:
                return run
        return None

    def get_run(self, mlflow_id: str) -> Any | None:
        """The MLflow run with this MLflow id, or None if the store has none (or refuses the id)."""
        try:
            return self.reads.get_run(mlflow_id)
        except Exception as exc:
            if internals.mlflow_error(exc) and getattr(exc, "error_code", None) != "INTERNAL_ERROR":
                return None
            raise

    def log_tags(self, mlflow_id: str, tags: Mapping[str, str]) -> None:
        """Set run tags, in calls MLflow accepts."""
        items = run_tags(tags)
        # A split value's marker comes last in ``tags``: its parts are stored before it.
        for chunk in chunks(items, MAX_TAGS_PER_CALL):
            self.store.log_batch(mlflow_id, metrics=[], params=[], tags=list(chunk))

    def log_params(self, state: OpenRun, config: Mapping[str, Any]) -> None:
        """Log the flattened keys of ``config`` the run has no param for yet.

        Another process writing the same run (a second Optuna worker on a study's parent run)
        may have logged some meanwhile, and MLflow refuses a changed value: then the run's
        params are read again and only the keys still new are logged.
        """
        from mlflow.entities import Param

        flat = m.flatten_params(config)
        for attempt in (1, 2):
            new = [Param(k, v) for k, v in flat.items() if k not in state.params]
            try:
                for chunk in chunks(new, MAX_PARAMS_PER_CALL):
                    self.store.log_batch(state.mlflow_id, metrics=[], params=list(chunk), tags=[])
            except Exception as exc:
                if attempt == 2 or not internals.mlflow_error(exc):
                    raise
                state.params.update(self.store.get_run(state.mlflow_id).data.params)
                continue
            state.params.update(p.key for p in new)
            return

    def artifact_repo(self, artifact_uri: str) -> Any:
        """MLflow's artifact repository of a run's artifact URI."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(artifact_uri, tracking_uri=self.settings.tracking_uri)
