"""Listing many runs: every run's own name, experiment, tags and config, and nothing stale."""

from __future__ import annotations

from pathlib import Path

import mltrack
from mltrack.factory import experiment_repository
from mltrack_aim import configure_aim_backend


def test_listing_many_runs_reports_each_runs_own_properties(aim_repo: Path) -> None:
    configure_aim_backend(repo_path=aim_repo)
    made = {}
    for i in range(12):  # enough runs for the bulk property load
        with mltrack.start_run(f"exp-{i % 3}", {"i": i}, name=f"run-{i}", tags=[f"t{i}"]) as run:
            run.log_metric("loss", float(i), step=0)
        made[run.id] = i
    repo = experiment_repository()

    listed = repo.list_experiments_sync()

    assert sorted(r.experiment_id for r in listed) == sorted(made)
    for summary in listed:
        i = made[summary.experiment_id]
        assert summary.name == f"run-{i}"
        assert summary.experiment_name == f"exp-{i % 3}"
        assert summary.tags == (f"t{i}",)
        assert summary.config == {"i": i}
        assert summary.final_metrics == {"loss": float(i)}


def test_a_run_created_after_a_listing_shows_in_the_next_one(aim_repo: Path) -> None:
    configure_aim_backend(repo_path=aim_repo)
    for i in range(10):
        with mltrack.start_run("before", name=f"b{i}"):
            pass
    repo = experiment_repository()
    assert len(repo.list_experiments_sync()) == 10

    with mltrack.start_run("after", name="late", tags=["new"]) as late:
        pass

    listed = {r.experiment_id: r for r in repo.list_experiments_sync()}
    assert len(listed) == 11
    assert listed[late.id].name == "late"
    assert listed[late.id].experiment_name == "after"
    assert listed[late.id].tags == ("new",)
