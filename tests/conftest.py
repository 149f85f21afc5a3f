"""Shared fixtures: every test starts from a clean mltrack configuration."""

from __future__ import annotations

from collections.abc import Iterator

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
    ):
        monkeypatch.delenv(var, raising=False)
    yield
    from mltrack import config, factory, plugins

    factory.reset()
    config._configured = None
    plugins.reset_plugin_host()
