"""One reference cluster (real PostgreSQL, SeaweedFS S3, ``mlflow server``) for the whole test session.

Started once (it takes ~20-30 s), stopped by PID at the end even when tests fail; the guard
each server runs under ends it too if pytest itself is killed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack_mlflow.cluster import Cluster, start_cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

STARTED: dict[str, float] = {}


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A running cluster of this test session (1 MLflow server worker: it starts and restarts twice as fast)."""
    begun = time.monotonic()
    running = start_cluster(tmp_path_factory.mktemp("cluster"), workers=1)
    STARTED["seconds"] = time.monotonic() - begun
    try:
        yield running
    finally:
        running.stop()
    for server in (running.mlflow, running.s3, running.postgres):
        assert not server.group_alive(), f"a cluster server (pid {server.pid}) outlived stop()"
