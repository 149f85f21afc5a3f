"""The conformance suite on a real ``mlflow server`` through mltrack's default writer process.

As users run it; slow (each test starts a writer process that imports mlflow), so not in CI.
A module of its own, so it gets a server of its own: the suite expects a store that only it
has written to.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mltrack.config import TrackingConfig
from mltrack.testing.conformance import BackendConformance, Harness
from mltrack_mlflow import MlflowProcess


@pytest.mark.slow
class TestMlflowServerWriterProcess(BackendConformance):
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
        )

    # Resume is the backend code TestMlflowSqlite (test_mlflow_conformance.py) tests already; through a server it
    # runs in the slow suite (nox -s slow), to keep the CI budget.
    @pytest.mark.slow
    def test_resumed_run_continues_its_steps_config_and_count(self, harness: Harness) -> None:
        super().test_resumed_run_continues_its_steps_config_and_count(harness)

    @pytest.mark.slow
    def test_resume_refuses_unknown_ambiguous_and_running_runs(self, harness: Harness) -> None:
        super().test_resume_refuses_unknown_ambiguous_and_running_runs(harness)
