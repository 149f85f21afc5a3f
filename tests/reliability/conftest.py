"""Fixtures of the reliability suite: real Aim repositories on disk, real servers, clean state."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

_ENV = (
    "AIM_REPO_PATH",
    "ML_STORAGE_PATH",
    "ML_TRACKING_BACKEND",
    "ML_EXPERIMENT_NAME",
    "MLTRACK_WRITER",
    "MLTRACK_HOOK_TIMEOUT",
    "MLTRACK_KEEP_SECRETS",
    "MLTRACK_FLUSH_INTERVAL",
    "MLTRACK_MAX_BUFFERED_POINTS",
    "MLTRACK_HANDLE_SIGTERM",
)


@pytest.fixture(autouse=True)
def clean_reliability_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts from the environment alone and leaves no tracker running."""
    import mltrack.config
    import mltrack.factory

    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    mltrack.config.reset_configuration()
    yield
    mltrack.config.reset_configuration()
    mltrack.factory.reset()


@pytest.fixture(scope="session")
def repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Aim repository, created once (creation costs a few seconds)."""
    from mltrack_aim.store import ensure_repo

    root = tmp_path_factory.mktemp("reliability-template")
    ensure_repo(str(root))
    return root


@pytest.fixture
def aim_repo(tmp_path: Path, repo_template: Path) -> Path:
    """A fresh, empty Aim repository folder of this test's own."""
    root = tmp_path / "aim_logs"
    shutil.copytree(repo_template, root)
    return root
