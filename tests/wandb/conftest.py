"""Fixtures for the W&B backend tests: real W&B run folders on disk, nothing reaching a network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# W&B's own tools (wandb leet, wandb sync) run in these tests: keep them offline and quiet.
os.environ.update(
    WANDB_MODE="offline",
    WANDB_SILENT="true",
    WANDB_DISABLE_GIT="true",
    WANDB_DISABLE_CODE="true",
    WANDB_ERROR_REPORTING="false",
    WANDB_X_DISABLE_STATS="true",
)


@pytest.fixture
def wandb_root(tmp_path: Path) -> Path:
    """An empty store folder of this test's own (runs go to ``<it>/wandb``)."""
    root = tmp_path / "wandb_logs"
    root.mkdir()
    return root
