"""mltrack's backend conformance suite on a local Aim repository and on a real ``aim server``."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from mltrack.config import TrackingConfig
from mltrack.testing.conformance import BackendConformance
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
