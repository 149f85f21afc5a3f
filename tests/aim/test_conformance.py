"""mltrack's backend conformance suite on a local Aim repository and on a real ``aim server``."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from mltrack.config import TrackingConfig
from mltrack.testing.conformance import BackendConformance, Harness
from mltrack_aim import AimProcess


class TestAimLocalRepository(BackendConformance):
    @pytest.fixture
    def tracking_config(self, aim_repo: Path) -> TrackingConfig:
        return TrackingConfig(
            backends=("aim",), backend_options={"aim": {"repo_path": str(aim_repo)}}, strict=True
        )

    def unusable_config(self, tracking_config: TrackingConfig, blocker: Path) -> TrackingConfig:
        """The repository under a regular file: the aim backend's ``repo_path`` option locates it."""
        return attrs.evolve(tracking_config, backend_options={"aim": {"repo_path": str(blocker / "repo")}})


class TestAimServer(BackendConformance):
    many_points = 1_000  # still many batches; 20,000 took 136 s through the server's queue

    @pytest.fixture
    def tracking_config(self, aim_server: AimProcess, tmp_path: Path) -> TrackingConfig:
        return TrackingConfig(
            backends=("aim",),
            backend_options={
                "aim": {"repo_path": aim_server.address, "artifacts_dir": str(tmp_path / "artifacts")}
            },
            strict=True,
        )

    # Resume is the backend code the local-store class above tests already; through a server it
    # runs in the slow suite (nox -s slow), to keep the CI budget.
    @pytest.mark.slow
    def test_resumed_run_continues_its_steps_config_and_count(self, harness: Harness) -> None:
        super().test_resumed_run_continues_its_steps_config_and_count(harness)

    @pytest.mark.slow
    def test_resume_refuses_unknown_ambiguous_and_running_runs(self, harness: Harness) -> None:
        super().test_resume_refuses_unknown_ambiguous_and_running_runs(harness)
