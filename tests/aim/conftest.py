"""Fixtures for the Aim backend tests: real repositories on disk, real Aim servers on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack_aim import AimProcess, start_aim_server, start_aim_ui

_ENV = ("AIM_REPO_PATH", "ML_STORAGE_PATH", "ML_TRACKING_BACKEND", "ML_EXPERIMENT_NAME", "MLTRACK_WRITER")


@pytest.fixture(autouse=True)
def clean_mltrack_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
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
    """An empty Aim repository, created once (creation costs a second or more)."""
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


@pytest.fixture(scope="module")
def aim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AimProcess]:
    """A real ``aim server`` on 127.0.0.1 (free port), stopped by process group afterwards."""
    root = tmp_path_factory.mktemp("aim-server-repo")
    server = start_aim_server(root)
    yield server
    server.stop()
    assert not server.is_running()


@pytest.fixture
def aim_ui(aim_repo: Path) -> Iterator[AimProcess]:
    """A real ``aim up`` for this test's repository, stopped by process group afterwards."""
    ui = start_aim_ui(aim_repo)
    yield ui
    ui.stop()
