"""mltrack's backend conformance suite on a local MLflow SQLite store and on a real ``mlflow server``.

The SQLite class runs as users do by default: writes go through mltrack's writer process.
The server class writes from this process (``writer="thread"``): it checks the backend over
MLflow's REST API, and spares each test the writer process's import of mlflow (about 1.5 s);
the writer process with this backend is covered by the SQLite class and the other tests here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mltrack.config import TrackingConfig
from mltrack.testing.conformance import BackendConformance, Harness
from mltrack_mlflow import MlflowProcess


class TestMlflowSqlite(BackendConformance):
    @pytest.fixture
    def tracking_config(self, mlflow_dir: Path) -> TrackingConfig:
        return TrackingConfig(backends=("mlflow",), storage_path=str(mlflow_dir), strict=True)


class TestMlflowServer(BackendConformance):
    many_points = 3_000  # still many batches over REST; 20,000 took 10 s of the CI suite

    @pytest.fixture
    def tracking_config(self, mlflow_server: MlflowProcess, tmp_path: Path) -> TrackingConfig:
        return TrackingConfig(
            backends=("mlflow",),
            backend_options={
                "mlflow": {
                    "tracking_uri": mlflow_server.tracking_uri,
                    "artifacts_dir": str(tmp_path / "downloads"),
                }
            },
            strict=True,
            writer="thread",
        )

    # Resume is the backend code the local-store class above tests already; through a server it
    # runs in the slow suite (nox -s slow), to keep the CI budget.
    @pytest.mark.slow
    def test_resumed_run_continues_its_steps_config_and_count(self, harness: Harness) -> None:
        super().test_resumed_run_continues_its_steps_config_and_count(harness)

    @pytest.mark.slow
    def test_resume_refuses_unknown_ambiguous_and_running_runs(self, harness: Harness) -> None:
        super().test_resume_refuses_unknown_ambiguous_and_running_runs(harness)
