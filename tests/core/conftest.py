from __future__ import annotations

from pathlib import Path

import pytest

from mltrack.config import TrackingConfig


@pytest.fixture
def memory_config(tmp_path: Path) -> TrackingConfig:
    """A strict config on a memory store of this test's own."""
    return TrackingConfig(
        backends=("memory",), backend_options={"memory": {"store": str(tmp_path)}}, strict=True
    )


@pytest.fixture
def use_memory(tmp_path: Path) -> None:
    """Configure the process-wide API for a memory store of this test's own."""
    import mltrack

    mltrack.configure_backend("memory", store=str(tmp_path))


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site dir holding two throwaway plugins: ``filelog`` (works) and ``broken``."""
    from _plugin_dists import build_plugins

    return build_plugins(tmp_path_factory.mktemp("plugins"))
