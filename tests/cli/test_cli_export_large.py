"""Exporting a 1,000,000-point run to CSV: progress shown, and the file equals the stored history."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from _cli_helpers import run_cli

pytest.importorskip("mltrack_aim")

POINTS = 1_000_000


@pytest.mark.slow  # 26 s of the CI suite; the smaller exports of tests/cli run there
def test_a_million_point_export_shows_progress_and_round_trips(tmp_path: Path) -> None:
    import mltrack
    from mltrack import factory
    from mltrack.factory import experiment_repository

    repo_dir = tmp_path / "aim_logs"
    mltrack.configure_backend("aim", repo_path=str(repo_dir))
    with mltrack.start_run("big-export") as run:
        for step in range(POINTS):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
    stored = experiment_repository().get_experiment_metrics_sync(run.id).series("loss")
    factory.reset()
    mltrack.reset_configuration()

    out = tmp_path / "big.csv"
    proc = run_cli(repo_dir, "export", run.id[:8], "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"{POINTS:,}/{POINTS:,} points" in proc.stderr  # the progress bar, at its end
    assert f"exported {POINTS} points of 1 run(s)" in proc.stdout

    with out.open(newline="") as fh:
        reader = csv.reader(fh)
        assert next(reader) == ["run_id", "run_name", "metric", "context", "step", "value", "timestamp"]
        steps, values = [], []
        for row in reader:
            steps.append(int(row[4]))
            values.append(float(row[5]))
    assert len(steps) == POINTS
    assert steps == [int(s) for s in stored.steps]
    assert values == [float(v) for v in stored.values]
