"""Fixtures for the Optuna integration tests: real Optuna RDB storage (SQLite), real stores."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def optuna_storage(tmp_path: Path) -> str:
    """An Optuna RDB storage URL on a SQLite file of this test's own."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.fixture
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracking failures raise instead of being warned about, so a test sees them."""
    monkeypatch.setenv("MLTRACK_STRICT", "1")
