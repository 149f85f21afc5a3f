"""Fixtures for the SB3 integration tests: real SB3 training on tiny budgets, real Aim repos."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _sb3_test_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """One torch thread (2-core CI), files in the test's tmp dir, failure counts forgotten."""
    import torch

    from mltrack_sb3._failures import reset_failures

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))
    reset_failures()
    yield
    reset_failures()


@pytest.fixture
def use_memory(tmp_path: Path) -> None:
    """Track into a memory store of this test's own (unit tests of the callback's logic)."""
    import mltrack

    mltrack.configure_backend("memory", store=str(tmp_path))


requires_aim = pytest.mark.skipif(
    importlib.util.find_spec("mltrack_aim") is None, reason="mltrack-aim is not installed"
)


@pytest.fixture
def aim_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Track into a real Aim repository on disk, configured the way users do: env vars."""
    if importlib.util.find_spec("mltrack_aim") is None:
        pytest.skip("mltrack-aim is not installed")
    root = tmp_path / "aim_logs"
    monkeypatch.setenv("ML_TRACKING_BACKEND", "aim")
    monkeypatch.setenv("ML_STORAGE_PATH", str(root))
    monkeypatch.setenv("AIM_REPO_PATH", str(root))
    import mltrack

    mltrack.reset_configuration()
    assert os.environ["ML_TRACKING_BACKEND"] == "aim"
    return root
