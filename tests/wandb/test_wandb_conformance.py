"""mltrack's backend conformance suite, unchanged, on W&B offline run folders.

One class writes through mltrack's writer process (how users run it: the backend registers
``out_of_process=True``), one from this process's writer thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mltrack.config import TrackingConfig
from mltrack.testing.conformance import BackendConformance


class TestWandbWriterProcess(BackendConformance):
    @pytest.fixture
    def tracking_config(self, wandb_root: Path) -> TrackingConfig:
        return TrackingConfig(backends=("wandb",), storage_path=str(wandb_root), strict=True)


class TestWandbThread(BackendConformance):
    @pytest.fixture
    def tracking_config(self, wandb_root: Path) -> TrackingConfig:
        return TrackingConfig(backends=("wandb",), storage_path=str(wandb_root), strict=True, writer="thread")
