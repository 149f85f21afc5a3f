"""Where the MLflow backend stores data: a local SQLite database or an MLflow tracking server.

The tracking URI is resolved from, in order: the ``tracking_uri`` backend option
(``configure_mlflow_backend``), ``MLFLOW_TRACKING_URI``, mltrack's ``storage_path``
(``ML_STORAGE_PATH``: a folder, holding ``mlflow.db``, or itself a URI), else
``./mlflow_logs``. A folder means ``sqlite:///<folder>/mlflow.db``.
This module does not import mlflow, so ``import mltrack_mlflow`` stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import attrs

from mltrack.config import BackendConfig, TrackingConfig, configure_backend
from mltrack.errors import BackendError
from mltrack.storage import storage_problems as local_problems

__all__ = [
    "DB_NAME",
    "DEFAULT_STORAGE_PATH",
    "MIN_FREE_BYTES",
    "REFUSE_BELOW_BYTES",
    "MlflowSettings",
    "configure_mlflow_backend",
    "preflight",
    "sqlite_uri",
    "storage_problems",
]

DEFAULT_STORAGE_PATH = "./mlflow_logs"
DB_NAME = "mlflow.db"
REMOTE_SCHEMES = ("http://", "https://")
MIN_FREE_BYTES = 16 * 2**20
"""Below this, health reports the disk full (SQLite needs room for its journal)."""
REFUSE_BELOW_BYTES = 2**20
"""Below this, a new run is refused before it starts."""


def sqlite_uri(folder: str | os.PathLike[str]) -> str:
    """``sqlite:///<absolute folder>/mlflow.db``: the embedded store of a folder."""
    return f"sqlite:///{Path(folder).expanduser().resolve() / DB_NAME}"


def _is_uri(text: str) -> bool:
    return "://" in text or text.startswith("file:")


@attrs.frozen
class MlflowSettings:
    """The resolved settings of one MLflow backend."""

    tracking_uri: str
    """``sqlite:///...`` (the default), another SQLAlchemy URI, or ``http(s)://`` for a server."""
    experiment_name: str
    artifacts_dir: str
    """Local store: the artifact root of experiments mltrack creates. Server: where mltrack
    keeps downloaded copies of artifacts (the server stores the originals)."""

    @property
    def is_remote(self) -> bool:
        """True for an MLflow tracking server (``http://`` or ``https://``)."""
        return self.tracking_uri.startswith(REMOTE_SCHEMES)

    @property
    def db_path(self) -> Path | None:
        """The SQLite database file, for a ``sqlite:///`` tracking URI (None otherwise)."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        # SQLAlchemy's form: sqlite:///relative/file.db or sqlite:////absolute/file.db
        path = unquote(self.tracking_uri[len("sqlite:///") :].split("?", 1)[0])
        return None if path in ("", ":memory:") else Path(path).resolve()

    @classmethod
    def from_backend_config(cls, config: BackendConfig) -> MlflowSettings:
        """Resolve the settings mltrack hands to the ``mlflow`` backend factory."""
        options: Mapping[str, Any] = config.options
        storage = config.storage_path
        raw = str(
            options.get("tracking_uri")
            or os.environ.get("MLFLOW_TRACKING_URI")
            or storage
            or DEFAULT_STORAGE_PATH
        )
        uri = raw.rstrip("/") if _is_uri(raw) else sqlite_uri(raw)
        artifacts = options.get("artifacts_dir")
        if not artifacts:
            db_path = cls(uri, config.experiment_name, "").db_path
            if db_path is not None:
                artifacts = db_path.parent / "artifacts"
            elif storage and not _is_uri(storage):
                artifacts = Path(storage) / "artifacts"
            else:
                artifacts = Path(DEFAULT_STORAGE_PATH) / "artifacts"
        return cls(
            tracking_uri=uri,
            experiment_name=config.experiment_name,
            artifacts_dir=str(Path(artifacts).expanduser().resolve()),
        )


def configure_mlflow_backend(
    tracking_uri: str | os.PathLike[str] | None = None,
    experiment_name: str | None = None,
    artifacts_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> TrackingConfig:
    """Use MLflow for tracking: ``configure_mlflow_backend(tracking_uri="./my_experiments")``.

    ``tracking_uri`` is a folder (the store is ``<folder>/mlflow.db``, created on first use),
    a ``sqlite:///`` or other SQLAlchemy URI, or ``http://host:port`` for an MLflow tracking
    server; by default ``MLFLOW_TRACKING_URI``, else ``ML_STORAGE_PATH``, else
    ``./mlflow_logs``. ``experiment_name`` is the default experiment of new runs
    (``ML_EXPERIMENT_NAME``). ``artifacts_dir`` is the artifact root of a local store (default
    ``<database folder>/artifacts``) or, for a server, where downloaded copies are kept.
    """
    if tracking_uri is not None:
        text = os.fspath(tracking_uri)
        options["tracking_uri"] = text if _is_uri(text) else sqlite_uri(text)
    if experiment_name is not None:
        options["experiment_name"] = experiment_name
    if artifacts_dir is not None:
        options["artifacts_dir"] = os.fspath(artifacts_dir)
    return configure_backend("mlflow", **options)


def storage_problems(db_path: Path, min_free: int = MIN_FREE_BYTES) -> list[str]:
    """Why the SQLite store at ``db_path`` cannot take writes (folder, file, free space)."""
    fix = "move the store (ML_STORAGE_PATH or MLFLOW_TRACKING_URI)"
    problems = local_problems(db_path.parent, min_free=min_free, what="MLflow store folder", fix=fix)
    if db_path.exists() and not os.access(db_path, os.W_OK):
        problems.append(f"MLflow database {db_path} is read-only: fix its permissions or {fix}")
    return problems


def preflight(config: BackendConfig) -> None:
    """Raise :class:`BackendError` if the configured local store cannot take a new run.

    Runs in the training process before every ``create_run`` (so it never imports mlflow); a
    tracking server is not probed here: its faults are retried and counted by the writer.
    """
    db_path = MlflowSettings.from_backend_config(config).db_path
    if db_path is None:
        return
    problems = storage_problems(db_path, min_free=REFUSE_BELOW_BYTES)
    if problems:
        raise BackendError("; ".join(problems))
