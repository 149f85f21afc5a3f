"""Fixtures for the Aim backend tests: real repositories on disk, real Aim servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack_aim import AimProcess, start_aim_server, start_aim_ui


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
