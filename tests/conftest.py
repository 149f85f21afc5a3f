"""Shared fixtures: every test starts from a clean mltrack configuration."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_mltrack_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in (
        "ML_TRACKING_BACKEND",
        "ML_STORAGE_PATH",
        "ML_EXPERIMENT_NAME",
        "AIM_REPO_PATH",
        "MLTRACK_STRICT",
        "MLTRACK_LOAD_PLUGINS",
        "MLTRACK_BLOCK_PLUGINS",
        "MLTRACK_STRICT_PLUGINS",
        "MLTRACK_TRACE_HOOKS",
        "MLTRACK_WRITER",
        "MLTRACK_HOOK_TIMEOUT",
        "MLTRACK_KEEP_SECRETS",
        "MLTRACK_FLUSH_INTERVAL",
        "MLTRACK_MAX_BUFFERED_POINTS",
        "MLTRACK_HANDLE_SIGTERM",
    ):
        monkeypatch.delenv(var, raising=False)
    yield
    from mltrack import config, factory, plugins

    factory.reset()
    config._configured = None
    plugins.reset_plugin_host()


@pytest.fixture(scope="session")
def repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Aim repository, created once (creation costs a few seconds)."""
    from mltrack_aim.store import ensure_repo

    root = tmp_path_factory.mktemp("aim-template")
    ensure_repo(str(root))
    return root


@pytest.fixture
def aim_repo(tmp_path: Path, repo_template: Path) -> Path:
    """A fresh, empty Aim repository folder (holding ``.aim``) of this test's own."""
    root = tmp_path / "aim_logs"
    shutil.copytree(repo_template, root)
    return root
