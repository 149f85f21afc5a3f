"""Fixtures for the TensorBoard backend tests: real log folders on disk, a real ``tensorboard`` on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltrack.config import TrackingConfig


@pytest.fixture
def tb_dir(tmp_path: Path) -> Path:
    """An empty log folder of this test's own."""
    root = tmp_path / "tb_logs"
    root.mkdir()
    return root


@pytest.fixture
def tb_config(tb_dir: Path) -> TrackingConfig:
    """Strict tracking into ``tb_dir`` from this process (no writer process)."""
    return TrackingConfig(backends=("tensorboard",), storage_path=str(tb_dir), strict=True, writer="thread")
