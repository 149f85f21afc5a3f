"""mltrack's backend conformance suite, unchanged, on TensorBoard event files.

One class writes through mltrack's writer process (how users run it: the backend registers
``out_of_process=True``), one from this process's writer thread.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mltrack.config import TrackingConfig
from mltrack.testing.conformance import BackendConformance


class TestTensorboardWriterProcess(BackendConformance):
    @pytest.fixture
    def tracking_config(self, tb_dir: Path) -> TrackingConfig:
        return TrackingConfig(backends=("tensorboard",), storage_path=str(tb_dir), strict=True)


class TestTensorboardThread(BackendConformance):
    @pytest.fixture
    def tracking_config(self, tb_dir: Path) -> TrackingConfig:
        return TrackingConfig(
            backends=("tensorboard",), storage_path=str(tb_dir), strict=True, writer="thread"
        )
