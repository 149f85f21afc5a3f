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
    @pytest.fixture
    def tracking_config(self, aim_server: AimProcess, tmp_path: Path) -> TrackingConfig:
        return TrackingConfig(
            backends=("aim",),
            backend_options={
                "aim": {"repo_path": aim_server.address, "artifacts_dir": str(tmp_path / "artifacts")}
            },
            strict=True,
        )

    @pytest.mark.xfail(
        strict=False,  # it does not fail every time: left open, see the commit that added it
        reason="known bug: on an aim server, mltrack_get_metrics of a deleted run may still answer "
        "(not None), and log_artifact may fail with a bare AssertionError; a local repository passes",
    )
    def test_deleted_run_leaves_no_metrics_or_artifacts_behind(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        super().test_deleted_run_leaves_no_metrics_or_artifacts_behind(harness, tmp_path)
