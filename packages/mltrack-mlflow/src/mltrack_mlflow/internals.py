"""Every use of MLflow's internals in mltrack-mlflow: one version gate, one error translation.

MLflow's public API goes through its store one ORM object at a time; mltrack reaches past
it in a few places, all here and nowhere else in the package (``tests/mlflow/
test_internals.py`` checks that):

* opening the tracking store itself (``SqlAlchemyStore``, ``FileStore``, ``RestStore``), as
  MLflow's own client does (there is no public constructor that returns the store);
* fast paths, each with a public fallback: bulk metric writes in SQL on MLflow's
  ``metrics`` and ``latest_metrics`` tables (fallback ``log_batch``), bulk metric reads in
  one query (fallback ``get_metric_history`` per metric), and purging a deleted run with
  the store's private ``_hard_delete_run`` (fallback: the ``mlflow gc`` command).

The fast paths run only on the MLflow releases they were verified with (:func:`verified`:
the installed version, read once from its distribution, within :data:`VERIFIED_FROM` ..
:data:`VERIFIED_UP_TO`); bulk writes also need ``MLTRACK_MLFLOW_BATCH`` on and tables of the
expected shape. :func:`translate` turns whatever MLflow or SQLAlchemy raise into
:mod:`mltrack.errors` types naming the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from mltrack.errors import BackendError, RunNotFoundError
from mltrack.settings import env
from mltrack_mlflow import mapping as m

__all__ = [
    "VERIFIED_FROM",
    "VERIFIED_UP_TO",
    "bulk_reads",
    "bulk_writes",
    "expected_tables",
    "hard_delete_run",
    "insert_points",
    "mlflow_error",
    "mlflow_version",
    "open_store",
    "read_points",
    "sqlalchemy_store_class",
    "translate",
    "verified",
]

log = logging.getLogger("mltrack.mlflow")

# --- the version gate ------------------------------------------------------------------------

VERIFIED_FROM = (3, 0)
VERIFIED_UP_TO = (3, 17)
"""The (major, minor) range of MLflow releases whose internals the fast paths were verified with."""

_version: str | None = None
_warned = False


def mlflow_version() -> str:
    """The installed mlflow's version, e.g. ``3.17.2`` (read once from its distribution)."""
    global _version
    if _version is None:
        from importlib.metadata import version

        _version = version("mlflow")
    return _version


def verified() -> bool:
    """True if the installed MLflow is a release the fast paths here were verified with."""
    global _warned
    parts = mlflow_version().split(".")
    try:
        release = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        release = (0, 0)
    ok = VERIFIED_FROM <= release <= VERIFIED_UP_TO
    if not ok and not _warned:
        _warned = True
        log.warning(
            "mltrack-mlflow: mlflow %s is not a version mltrack-mlflow was verified with (%d.%d to %d.%d); "
            "metrics are written and read through MLflow's public API (slower)",
            mlflow_version(),
            *VERIFIED_FROM,
            *VERIFIED_UP_TO,
        )
    return ok


def bulk_writes(store: Any) -> bool:
    """True if metric points may go to the SQLite store's tables in one statement.

    MLflow's ``log_batch`` builds an ORM object per point (about 100 us each); the bulk path
    writes the same rows to the same tables, with the same latest-value rule, in one
    transaction. It relies on MLflow's table layout, so it is on only for a verified MLflow
    whose tables have the expected columns; ``MLTRACK_MLFLOW_BATCH=0`` turns it off.
    """
    if not env("MLTRACK_MLFLOW_BATCH") or not verified():
        return False
    try:
        return expected_tables(store)
    except Exception as exc:
        log.info("mltrack-mlflow: bulk writes off: %s", exc)
        return False


def bulk_reads() -> bool:
    """True if a SQLite store's metric points may be read in one SQL query (a verified MLflow)."""
    return verified()


# --- the error translation ------------------------------------------------------------------


def mlflow_error(exc: BaseException) -> bool:
    """True if MLflow's store raised ``exc`` (an ``MlflowException``, or the REST reader's twin).

    Checked without importing mlflow: if it was never imported, nothing of it raised.
    """
    from mltrack_mlflow.rest import RestError

    if isinstance(exc, RestError):
        return True
    exceptions = sys.modules.get("mlflow.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.MlflowException)


@contextlib.contextmanager
def translate(what: str, store: str) -> Iterator[None]:
    """Turn MLflow's (and SQLAlchemy's) exceptions into mltrack's typed errors naming the store."""
    try:
        yield
    except (BackendError, RunNotFoundError):
        raise
    except Exception as exc:
        if mlflow_error(exc):
            error: Any = exc
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RunNotFoundError(f"mlflow backend: {what} ({store}): {error.message}") from exc
            raise BackendError(f"mlflow backend: {what} ({store}): {error.message}") from exc
        raise BackendError(f"mlflow backend: {what} ({store}): {type(exc).__name__}: {exc}") from exc


# --- the tracking store ----------------------------------------------------------------------


def sqlalchemy_store_class() -> Any:
    """MLflow's SQL store class, imported without the SQLAlchemy deprecation warning it triggers."""
    with warnings.catch_warnings():
        # MLflow's models use a loader strategy SQLAlchemy 2.1 deprecates; nothing mltrack can act on.
        warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return SqlAlchemyStore


def open_store(uri: str, artifacts_uri: str, *, remote: bool, db_path: Path | None) -> Any:
    """MLflow's tracking store for ``uri``: a server's REST store, a file store, or a SQL database."""
    if remote:
        from mlflow.store.tracking.rest_store import RestStore
        from mlflow.utils.credentials import get_default_host_creds

        rest_store: Any = RestStore  # MLflow's stores are untyped
        return rest_store(partial(get_default_host_creds, uri))
    if uri.startswith("file:"):
        from mlflow.store.tracking.file_store import FileStore

        file_store: Any = FileStore
        return file_store(uri, artifacts_uri)
    SqlAlchemyStore = sqlalchemy_store_class()
    if db_path is None:
        return SqlAlchemyStore(uri, artifacts_uri)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # Creating a database runs MLflow's migrations; two processes doing it at once collide.
    lock_path = db_path.parent / f".{db_path.name}.mltrack-lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not db_path.exists():
                _create_aside(SqlAlchemyStore, db_path, artifacts_uri)
            return SqlAlchemyStore(uri, artifacts_uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _create_aside(store_class: Any, db_path: Path, artifacts_uri: str) -> None:
    """Run MLflow's migrations on a database beside ``db_path``, then move it into place whole.

    A process killed while migrating (a writer process killed as it starts) would otherwise
    leave a half-migrated database no later process can open. Called with the creation lock
    held, so a file left aside is a killed creator's and is started over.
    """
    aside = db_path.with_name(f".{db_path.name}.creating")
    aside.unlink(missing_ok=True)
    created = store_class(f"sqlite:///{aside}", artifacts_uri)
    created.engine.dispose()
    os.replace(aside, db_path)


def hard_delete_run(store: Any, mlflow_id: str, tracking_uri: str, *, remote: bool) -> None:
    """Purge a deleted run for good where the store can; a server only soft-deletes.

    On a verified MLflow this is the store's ``_hard_delete_run`` (what ``mlflow gc`` calls,
    a few milliseconds); otherwise ``mlflow gc`` itself runs (a few seconds: it imports mlflow).
    """
    if remote:
        return
    if verified():
        hard_delete = getattr(store, "_hard_delete_run", None)
        if callable(hard_delete):
            hard_delete(mlflow_id)
        return
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "gc",
        "--backend-store-uri",
        tracking_uri,
        "--tracking-uri",
        tracking_uri,
        "--run-ids",
        mlflow_id,
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env={"MLFLOW_DISABLE_TELEMETRY": "true", **os.environ},  # the user's own choice wins
    )
    if done.returncode != 0:
        raise BackendError(
            f"mlflow backend: `mlflow gc` could not purge run {mlflow_id} from {tracking_uri}: "
            f"{done.stderr.strip()[-500:]}; the run is deleted (hidden) but its rows remain: run "
            f"`mlflow gc --backend-store-uri {tracking_uri} --run-ids {mlflow_id}`"
        )


# --- bulk metric writes and reads in SQL (SQLite stores) -------------------------------------

_METRICS_COLUMNS = {"key", "value", "timestamp", "run_uuid", "step", "is_nan"}
_LATEST_COLUMNS = {"key", "value", "timestamp", "step", "is_nan", "run_uuid"}
# A point already stored (same key, time, step and value) is skipped, as MLflow does.
_INSERT_METRICS = (
    "INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
    "VALUES (:key, :value, :ts, :run, :step, :nan)"
)
_UPSERT_LATEST = (
    "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
    "VALUES (:key, :value, :ts, :step, :nan, :run) "
    "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp, "
    "step = excluded.step, is_nan = excluded.is_nan "
    "WHERE (excluded.step, excluded.timestamp, excluded.value) > "
    "(latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
)


def _run_stage_query() -> Any:
    import sqlalchemy

    return sqlalchemy.text("SELECT lifecycle_stage FROM runs WHERE run_uuid = :run")


def expected_tables(store: Any) -> bool:
    """True if MLflow's ``metrics`` and ``latest_metrics`` tables have the columns the bulk path writes."""
    import sqlalchemy

    with store.engine.connect() as conn:
        found = {
            table: {row[1] for row in conn.execute(sqlalchemy.text(f"PRAGMA table_info({table})"))}
            for table in ("metrics", "latest_metrics")
        }
    return found["metrics"] == _METRICS_COLUMNS and found["latest_metrics"] == _LATEST_COLUMNS


def insert_points(store: Any, mlflow_id: str, points: Sequence[tuple[str, float, int, int]]) -> None:
    """Insert points as MLflow's SQL store does (NaN and infinities alike), in one transaction."""
    import sqlalchemy

    rows = []
    latest: dict[str, dict[str, Any]] = {}
    for key, value, ts, step in points:
        is_nan = math.isnan(value)
        stored = 0.0 if is_nan else max(-m.FLOAT_MAX, min(m.FLOAT_MAX, value))
        row = {"key": key, "value": stored, "ts": ts, "run": mlflow_id, "step": step, "nan": is_nan}
        rows.append(row)
        best = latest.get(key)
        # MLflow's rule: the latest value is the greatest (step, timestamp, value).
        if best is None or (step, ts, stored) > (best["step"], best["ts"], best["value"]):
            latest[key] = row
    if not rows:
        return
    with store.engine.begin() as conn:
        stage = conn.execute(_run_stage_query(), {"run": mlflow_id}).scalar()
        if stage is None:
            raise RunNotFoundError(f"mlflow backend: no MLflow run {mlflow_id!r}")
        if stage != "active":
            raise BackendError(f"mlflow backend: MLflow run {mlflow_id} is deleted; it takes no metrics")
        conn.execute(sqlalchemy.text(_INSERT_METRICS), rows)
        conn.execute(sqlalchemy.text(_UPSERT_LATEST), list(latest.values()))


def read_points(
    store: Any, mlflow_id: str, keys: Sequence[str]
) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """Bulk read of a run's points in one query, in insertion order within each step."""
    import sqlalchemy

    query = sqlalchemy.text(
        "SELECT key, step, value, is_nan, timestamp FROM metrics WHERE run_uuid = :run "
        "ORDER BY key, step, rowid"
    )
    wanted = set(keys)
    out: dict[str, tuple[list[int], list[float], list[float]]] = {}
    current: tuple[list[int], list[float], list[float]] | None = None
    current_key = None
    with store.engine.connect() as conn:
        for key, step, value, is_nan, ts in conn.execute(query, {"run": mlflow_id}):
            if key != current_key:
                current_key = key
                current = out.setdefault(key, ([], [], [])) if key in wanted else None
            if current is None:
                continue
            value = math.nan if is_nan else m.from_mlflow_value(float(value))
            if current[0] and current[0][-1] == step:  # a later write of the same step wins
                current[1][-1] = value
                current[2][-1] = ts / 1000.0
            else:
                current[0].append(int(step))
                current[1].append(value)
                current[2].append(ts / 1000.0)
    return out
