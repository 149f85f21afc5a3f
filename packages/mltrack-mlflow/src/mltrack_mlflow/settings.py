"""Where the MLflow backend stores data: a local SQLite database or an MLflow tracking server.

The tracking URI is resolved from, in order: the ``tracking_uri`` backend option
(``configure_mlflow_backend``), ``MLFLOW_TRACKING_URI``, mltrack's ``storage_path``
(``ML_STORAGE_PATH``: a folder, holding ``mlflow.db``, or itself a URI), else
``./mlflow_logs``. A folder means ``sqlite:///<folder>/mlflow.db``.
This module does not import mlflow, so ``import mltrack_mlflow`` stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import attrs

from mltrack.config import (
    BackendConfig,
    TrackingConfig,
    configure_backend,
    parse_backend_options,
    store_location,
)
from mltrack.errors import BackendError, StoreNotFoundError
from mltrack.storage import storage_problems as local_problems

__all__ = [
    "DB_NAME",
    "DEFAULT_STORAGE_PATH",
    "MIN_FREE_BYTES",
    "REFUSE_BELOW_BYTES",
    "MlflowOptions",
    "MlflowSettings",
    "configure_mlflow_backend",
    "preflight",
    "require_store",
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


@attrs.frozen(kw_only=True)
class MlflowOptions:
    """The options of the ``mlflow`` backend: ``configure_mlflow_backend(...)``,
    ``configure_backend("mlflow", ...)``, ``mltrack copy --to-option KEY=VALUE``.

    Declared at ``register("mlflow", ..., options=MlflowOptions)``, so a mistyped one is an error.
    """

    tracking_uri: str | None = attrs.field(
        default=None,
        metadata={"help": "a folder, sqlite:///... or http(s):// server (default: MLFLOW_TRACKING_URI)"},
    )
    artifacts_dir: str | None = attrs.field(
        default=None,
        metadata={"help": "artifact root of a local store (default: <database folder>/artifacts)"},
    )


@attrs.frozen
class MlflowSettings:
    """The resolved settings of one MLflow backend."""

    tracking_uri: str
    """``sqlite:///...`` (the default), another SQLAlchemy URI, or ``http(s)://`` for a server."""
    experiment_name: str
    artifacts_dir: str
    """Local store: the artifact root of experiments mltrack creates. Server: where mltrack
    keeps downloaded copies of artifacts (the server stores the originals)."""
    source: str = "MLFLOW_TRACKING_URI"
    """The setting the store's location came from, named in error messages."""
    must_exist: bool = False
    """Open an existing store only (for reading): never create a database."""

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
        options = parse_backend_options("mlflow", MlflowOptions, config.options)
        storage = config.storage_path
        raw, source = _location(options, storage)
        uri = raw.rstrip("/") if _is_uri(raw) else sqlite_uri(raw)
        artifacts: str | Path | None = options.artifacts_dir
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
            source=source,
            must_exist=config.must_exist,
        )


def _location(options: MlflowOptions, storage_path: str | None) -> tuple[str, str]:
    """Where the store is, and the setting that said so (in the order of precedence)."""
    return store_location(
        options.tracking_uri, "tracking_uri", "MLFLOW_TRACKING_URI", storage_path, DEFAULT_STORAGE_PATH
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


def storage_problems(
    db_path: Path, min_free: int = MIN_FREE_BYTES, setting: str = "ML_STORAGE_PATH or MLFLOW_TRACKING_URI"
) -> list[str]:
    """Why the SQLite store at ``db_path`` cannot take writes (folder, file, free space).

    ``setting`` is the one the user chose the store with (:attr:`MlflowSettings.source`),
    named in the fix.
    """
    fix = f"move the store ({setting})"
    problems = local_problems(db_path.parent, min_free=min_free, what="MLflow store folder", fix=fix)
    if db_path.exists() and not os.access(db_path, os.W_OK):
        problems.append(f"MLflow database {db_path} is read-only: fix its permissions or {fix}")
    return problems


def require_store(settings: MlflowSettings) -> None:
    """Raise :class:`StoreNotFoundError` unless the local SQLite database exists (reading creates none).

    Other stores (a server, another database) are not probed: their own errors say what is wrong.
    """
    db_path = settings.db_path
    if db_path is None:
        return
    try:
        found = db_path.is_file()
    except OSError as exc:  # e.g. a folder the user may not enter
        raise BackendError(
            f"cannot read the MLflow store {db_path} ({settings.source}): {exc.strerror or exc}: "
            f"fix its permissions or point {settings.source} elsewhere"
        ) from exc
    if not found:
        raise StoreNotFoundError(
            f"no MLflow store at {db_path.parent} ({settings.source}): no {db_path.name} there; "
            "check the path, or write a run there first"
        )


def preflight(config: BackendConfig) -> None:
    """Raise :class:`BackendError` if the configured local store cannot take a new run.

    Runs in the training process before every ``create_run`` (so it never imports mlflow); a
    tracking server is not probed here: its faults are retried and counted by the writer.
    """
    settings = MlflowSettings.from_backend_config(config)
    db_path = settings.db_path
    if db_path is None:
        return
    problems = storage_problems(db_path, min_free=REFUSE_BELOW_BYTES, setting=settings.source)
    if problems:
        raise BackendError("; ".join(problems))
