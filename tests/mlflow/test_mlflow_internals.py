"""MLflow's internals stay behind one door, and a newer MLflow falls back to the public API.

mltrack-mlflow's fast paths (raw SQL on MLflow's tables, the store's private purge) run only
on the MLflow releases they were verified with. These tests make the version gate read a
newer MLflow and check that a real run in a real SQLite store still round-trips completely
through the public fallbacks (``log_batch``, ``get_metric_history``, ``mlflow gc``), and that
no module but ``mltrack_mlflow.internals`` touches MLflow's internals.
"""

from __future__ import annotations

import math
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import mltrack_mlflow
from mltrack.config import BackendConfig
from mltrack.models import (
    ArtifactType,
    ExperimentRun,
    ExperimentStatus,
    MetricBatch,
    ModelArtifact,
    RunFilter,
)

PACKAGE = Path(mltrack_mlflow.__file__).parent


def _batch(
    name: str, steps: list[int], values: list[float], context: dict[str, str] | None = None
) -> MetricBatch:
    ctx = tuple(sorted((context or {}).items()))
    now = time.time()
    return MetricBatch(
        keys=[(name, ctx)],
        key_index=[0] * len(steps),
        steps=steps,
        values=values,
        timestamps=[now + i * 0.001 for i in range(len(steps))],
    )


def _backend(root: Path) -> Any:
    from mltrack_mlflow.backend import MlflowBackend

    return MlflowBackend.from_config(BackendConfig("mlflow", storage_path=str(root)))


def _forbid(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{name} used although the version gate says MLflow is not verified")

    monkeypatch.setattr(module, name, refuse)


def _rows(db: Path, table: str, mlflow_id: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(
            conn.execute(f"SELECT COUNT(*) FROM {table} WHERE run_uuid = ?", (mlflow_id,)).fetchone()[0]
        )


def test_the_installed_mlflow_is_verified_and_takes_the_fast_paths(mlflow_dir: Path) -> None:
    from mltrack_mlflow import internals

    assert internals.verified(), f"mlflow {internals.mlflow_version()} is installed"
    backend = _backend(mlflow_dir)
    try:
        assert backend.bulk_writes
    finally:
        backend.close()


def test_a_newer_mlflow_uses_the_public_api_and_keeps_every_part_of_a_run(
    mlflow_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mltrack_mlflow import internals

    monkeypatch.setattr(internals, "mlflow_version", lambda: "3.99.0")
    assert not internals.verified()
    for name in ("insert_points", "read_points", "expected_tables"):
        _forbid(monkeypatch, internals, name)

    artifact_file = tmp_path / "model.bin"
    artifact_file.write_bytes(b"weights")
    run = ExperimentRun(
        id=uuid.uuid4().hex[:24],
        experiment_name="newer-mlflow",
        config={"lr": 0.001, "layers": [64, 64]},
        name="fallback",
        tags=("base",),
        description="d",
    )
    backend = _backend(mlflow_dir)
    try:
        assert not backend.bulk_writes
        backend.mltrack_create_run(run)
        backend.mltrack_log_metrics(run.id, _batch("loss", [2, 0, 1, 3], [0.5, 1.0, 0.75, math.nan]))
        backend.mltrack_log_metrics(run.id, _batch("loss", [4, 2], [0.25, 0.4]))  # step 2 rewritten
        backend.mltrack_log_metrics(run.id, _batch("loss", [0, 1], [9.0, 8.0], {"subset": "val"}))
        backend.mltrack_log_params(run.id, {"batch_size": 32})
        backend.mltrack_set_tags(run.id, ["extra"])
        backend.mltrack_log_artifact(
            run.id, ModelArtifact("weights/model.bin", ArtifactType.MODEL, str(artifact_file), size=7)
        )
        backend.mltrack_finish_run(
            run.id, ExperimentStatus.COMPLETED, datetime.now(timezone.utc), {"loss": 0.25}
        )
    finally:
        backend.close()

    reader = _backend(mlflow_dir)  # a second backend: nothing comes from the writer's memory
    try:
        summary = reader.mltrack_get_run(run.id)
        assert summary is not None
        assert summary.status is ExperimentStatus.COMPLETED
        assert summary.end_time is not None
        assert summary.name == "fallback" and summary.description == "d"
        assert summary.config == {"lr": 0.001, "layers": [64, 64], "batch_size": 32}
        assert set(summary.tags) == {"base", "extra"}
        assert summary.final_metrics == {"loss": 0.25}
        assert [s.experiment_id for s in reader.mltrack_list_runs(RunFilter())] == [run.id]

        series = {
            (s.name, tuple(sorted(s.context.items()))): s
            for s in reader.mltrack_get_metrics(run.id, None) or []
        }
        loss = series[("loss", ())]
        assert list(loss.steps) == [0, 1, 2, 3, 4]
        assert list(loss.values)[:3] == [1.0, 0.75, 0.4] and math.isnan(loss.values[3])
        assert loss.values[4] == 0.25
        assert all(t > 1e9 for t in loss.timestamps)  # the points' own times
        val = series[("loss", (("subset", "val"),))]
        assert list(val.steps) == [0, 1] and list(val.values) == [9.0, 8.0]

        (artifact,) = reader.mltrack_list_artifacts(run.id) or []
        assert artifact.name == "weights/model.bin"
        assert artifact.artifact_type is ArtifactType.MODEL
        assert Path(artifact.file_path).read_bytes() == b"weights"
        assert reader.mltrack_health().details["mlflow_internals_verified"] is False

        # Deleting purges the run through `mlflow gc` instead of the store's private method.
        mlflow_id = reader.access.find(run.id).info.run_id
        _forbid(monkeypatch, type(reader.store), "_hard_delete_run")
        reader.mltrack_delete_run(run.id)
        db = reader.settings.db_path
        for table in ("runs", "metrics", "latest_metrics", "params", "tags"):
            assert _rows(db, table, mlflow_id) == 0, table
        assert reader.mltrack_get_run(run.id) is None
    finally:
        reader.close()


# --- one door -----------------------------------------------------------------------------

# MLflow's internals: only mltrack_mlflow.internals may use them.
_PRIVATE = re.compile(
    r"\bsqlalchemy\b|\bSELECT\b|\bINSERT\b|\bPRAGMA\b|\bUPDATE\b|\bDELETE FROM\b"
    r"|mlflow\.store\.tracking|RestStore|FileStore|SqlAlchemyStore|\.engine\b|_hard_delete"
)
# An underscore attribute of anything but the module's own objects (self, cls).
_PRIVATE_ATTRIBUTE = re.compile(r"\b(\w+)\._[A-Za-z]")


# cluster.py administers the deployment's PostgreSQL (its own catalog, creating databases), not
# MLflow's store: SQL there is not a use of MLflow's internals.
_NOT_MLFLOW = ("internals.py", "cluster.py")


@pytest.mark.parametrize(
    "module", sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in _NOT_MLFLOW), ids=str
)
def test_no_module_but_internals_touches_mlflows_internals(module: str) -> None:
    source = (PACKAGE / module).read_text()
    found = sorted(set(_PRIVATE.findall(source)))
    assert not found, (
        f"{module} uses MLflow internals {found}: move that code into mltrack_mlflow/internals.py"
    )
    owners = sorted({m for m in _PRIVATE_ATTRIBUTE.findall(source) if m not in ("self", "cls")})
    assert not owners, (
        f"{module} reads private attributes of {owners}: go through mltrack_mlflow/internals.py"
    )


def test_a_creator_killed_while_mlflow_migrates_leaves_no_half_made_database(tmp_path: Path) -> None:
    # A writer process killed as it starts can die inside MLflow's migrations: they run on a
    # database made aside, so the store's own file appears only once complete.
    root = tmp_path / "mlflow"
    code = f"""
import os, signal
import mlflow.store.db.utils as db_utils
from mltrack.config import BackendConfig
from mltrack_mlflow.backend import MlflowBackend

def killed_while_migrating(engine):
    print("store file exists while migrating:", os.path.exists({str(root / "mlflow.db")!r}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

db_utils._upgrade_db = killed_while_migrating
MlflowBackend.from_config(BackendConfig("mlflow", storage_path={str(root)!r})).store
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert done.stdout.strip() == "store file exists while migrating: False"
    backend = _backend(root)  # the next process finds no store, or a whole one
    try:
        run = ExperimentRun(id=uuid.uuid4().hex[:24], experiment_name="after-kill", config={})
        backend.mltrack_create_run(run)
        backend.mltrack_finish_run(run.id, ExperimentStatus.COMPLETED, datetime.now(timezone.utc), {})
        summary = backend.mltrack_get_run(run.id)
        assert summary is not None and summary.status is ExperimentStatus.COMPLETED
    finally:
        backend.close()
    assert not (root / ".mlflow.db.creating").exists()  # the killed creator's file was started over


def test_a_database_left_half_made_by_a_killed_creator_is_started_over(tmp_path: Path) -> None:
    # A writer process killed while MLflow migrates a new database leaves only the file made
    # aside (here: garbage in its place); the store itself appears only once complete.
    root = tmp_path / "mlflow"
    root.mkdir()
    (root / ".mlflow.db.creating").write_bytes(b"half a migration")
    backend = _backend(root)
    try:
        run = ExperimentRun(id=uuid.uuid4().hex[:24], experiment_name="aside", config={})
        backend.mltrack_create_run(run)
        backend.mltrack_finish_run(run.id, ExperimentStatus.COMPLETED, datetime.now(timezone.utc), {})
    finally:
        backend.close()
    assert (root / "mlflow.db").is_file() and not (root / ".mlflow.db.creating").exists()
    reader = _backend(root)
    try:
        summary = reader.mltrack_get_run(run.id)
        assert summary is not None and summary.status is ExperimentStatus.COMPLETED
    finally:
        reader.close()


def test_a_second_writer_of_one_run_changing_a_param_keeps_the_new_value_in_the_config(
    tmp_path: Path,
) -> None:
    # Two processes writing one run (Optuna workers sharing a study's parent run): the second
    # does not know which params the first logged, and MLflow refuses a changed value.
    root = tmp_path / "mlflow"
    first, second = _backend(root), _backend(root)
    try:
        run = ExperimentRun(id=uuid.uuid4().hex[:24], experiment_name="shared", config={})
        first.mltrack_create_run(run)
        first.mltrack_log_params(run.id, {"best": 1.5})
        second.mltrack_log_params(run.id, {"best": 0.5, "trials": 4})
        summary = second.mltrack_get_run(run.id)
        assert summary is not None and summary.config == {"best": 0.5, "trials": 4}
    finally:
        first.close()
        second.close()
