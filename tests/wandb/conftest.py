"""Fixtures for the W&B backend tests: real W&B run folders on disk, nothing reaching a network."""

from __future__ import annotations

from pathlib import Path

import pytest

# W&B's own tools (wandb leet, wandb sync, wandb.init in a child) run in these tests: offline and quiet.
WANDB_TEST_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_X_DISABLE_STATS": "true",
}


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and every process it starts) sees W&B offline, unless it says otherwise."""
    for key, value in WANDB_TEST_ENV.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def wandb_root(tmp_path: Path) -> Path:
    """An empty store folder of this test's own (runs go to ``<it>/wandb``)."""
    root = tmp_path / "wandb_logs"
    root.mkdir()
    return root
