"""The load test of benchmarks/load_test.py on a real cluster: short in CI, in full as a slow test."""

from __future__ import annotations

from pathlib import Path

import load_test
import pytest

from mltrack_mlflow.cluster import Cluster, start_cluster


def test_trainers_killed_and_server_restarted_lose_nothing(cluster: Cluster) -> None:
    """2 trainers log 5,000 points and 3 artifacts each; one is SIGKILLed, the server restarted once.

    Every point the killed trainer's calls returned before the kill (less the flush interval)
    and every point of the other is in PostgreSQL, every artifact in S3 with its sha256, the
    killed run reads CRASHED, `mltrack ls` lists both, and the listing takes under a second.
    """
    result = load_test.run_load_test(
        cluster,
        trainers=2,
        points=5_000,
        pace=10.0,
        kill_at=0.4,
        restart_at=0.45,
        raw=False,
        timeout=240,
    )
    assert result.lost_points == 0
    assert result.killed_points_required >= 2_000
    assert result.mltrack_points >= 5_000 + result.killed_points_required
    assert result.artifacts_checked == 6
    assert result.killed_status == "CRASHED"
    assert result.ls_runs == 2 and result.ls_seconds < 1.0


@pytest.mark.slow
def test_full_load_test(tmp_path: Path) -> None:
    """16 trainers x 100,000 points and 3 artifacts, one killed, the server restarted; vs raw log_batch.

    Brings up a cluster of its own (2 MLflow server workers) and stops it by PID.
    """
    with start_cluster(tmp_path / "cluster", workers=2) as cluster:
        result = load_test.run_load_test(
            cluster, trainers=16, points=100_000, pace=60.0, raw=True, timeout=3000
        )
        servers = (cluster.mlflow, cluster.s3, cluster.postgres)
    assert not any(server.group_alive() for server in servers)
    print(result.to_json())
    assert result.lost_points == 0
    assert result.mltrack_points >= 15 * 100_000 + result.killed_points_required
    assert result.artifacts_checked == 48
    assert result.killed_status == "CRASHED"
    assert result.ls_runs == 16 and result.ls_seconds < 1.0
    assert result.ls_wall_seconds < 1.0  # `mltrack ls` as a user types it
    assert result.raw_points == 16 * 100_000
