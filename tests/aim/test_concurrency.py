"""Several training processes writing into one Aim repository (or one aim server) at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mltrack
from mltrack_aim import AimProcess, configure_aim_backend

from _child import popen_python

WRITERS = 4


def _writer(repo: str, points: int, index: int, artifacts: str) -> str:
    return f"""
        import json, mltrack
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={repo!r}, experiment_name="concurrent-{points}", artifacts_dir={artifacts!r})
        with mltrack.start_run(config={{"writer": {index}}}) as run:
            for step in range({points}):
                run.log_metric("value", step * 10 + {index}, step=step)
        session = mltrack.factory.tracking_session()
        stats = session.stats
        print(json.dumps(dict(run=run.id, undelivered=stats.points_undelivered, errors=stats.write_errors)))
    """


def _write_concurrently(repo: str, points: int, artifacts: Path) -> None:
    """Four writers at once; their runs go to an experiment of their own (the server is shared)."""
    children = [popen_python(_writer(repo, points, i, str(artifacts))) for i in range(WRITERS)]
    results = []
    for child in children:
        out, err = child.communicate(timeout=1800)
        assert child.returncode == 0, err[-5000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["undelivered"] == 0 and r["errors"] == 0 for r in results), results

    configure_aim_backend(repo_path=repo, artifacts_dir=str(artifacts))
    repo_api = mltrack.factory.experiment_repository()
    runs = {r.experiment_id: r for r in repo_api.list_experiments_sync(name=f"concurrent-{points}")}
    assert set(runs) == {r["run"] for r in results}
    for r in runs.values():
        assert r.status is mltrack.ExperimentStatus.COMPLETED
        index = r.config["writer"]
        series = repo_api.get_experiment_metrics_sync(r.experiment_id).series("value")
        assert len(series) == points
        assert [int(s) for s in series.steps] == list(range(points))
        assert [float(v) for v in series.values] == [float(s * 10 + index) for s in range(points)]


def test_four_processes_write_50k_points_each_into_one_local_repository(
    aim_repo: Path, tmp_path: Path
) -> None:
    _write_concurrently(str(aim_repo), 50_000, tmp_path / "artifacts")


@pytest.mark.slow
def test_four_processes_write_into_one_aim_server(aim_server: AimProcess, tmp_path: Path) -> None:
    # Slow since CI has tests/reliability's 8 processes x 4 threads into one aim server (the
    # same path, 24 s of the suite); a server takes ~1.5 ms a point end to end.
    _write_concurrently(aim_server.address, 1_000, tmp_path / "artifacts")


@pytest.mark.slow
def test_four_processes_write_50k_points_each_into_one_aim_server(
    aim_server: AimProcess, tmp_path: Path
) -> None:
    _write_concurrently(aim_server.address, 50_000, tmp_path / "artifacts")
