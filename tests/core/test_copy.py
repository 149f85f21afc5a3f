"""Copying runs between stores (repository API and ``mltrack copy``), on two memory stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mltrack
from mltrack.cli import main
from mltrack.factory import open_repository, tracking_session
from mltrack.repository import ExperimentRepository


def _record(tmp_path: Path) -> list[str]:
    """Three finished runs in the memory store ``<tmp_path>/src``: metrics with contexts, an artifact, statuses."""
    mltrack.configure_backend("memory", store=f"{tmp_path}/src")
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 100)
    ids = []
    with mltrack.start_run("exp-a", {"lr": 0.1, "net": {"layers": [64, 64]}}, name="one", tags=["x"]) as run:
        for step in range(120):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
            run.log_metric("loss", 2.0 / (step + 1), step=step, context={"subset": "val"})
        run.log_artifact(model, "model", name="models/best.bin", metadata={"epoch": 3})
    ids.append(run.id)
    with pytest.raises(RuntimeError), mltrack.start_run("exp-b", description="broke") as failed:
        failed.log_metric("reward", 5.0, step=0)
        raise RuntimeError("boom")
    ids.append(failed.id)
    with mltrack.start_run("exp-b") as third:
        third.log_metrics({"a": 1.0, "b": 2.0}, step=7)
    ids.append(third.id)
    tracking_session().flush()
    return ids


def _everything(repo: ExperimentRepository, run_id: str) -> dict[str, object]:
    """What a user compares: summary fields, every point (with its time), artifacts and their bytes."""
    s = repo.get_experiment_sync(run_id)
    history = repo.get_experiment_metrics_sync(run_id)
    return {
        "summary": (s.name, s.experiment_name, s.status, s.start_time, s.end_time, s.config, sorted(s.tags)),
        "final": s.final_metrics,
        "description": s.description,
        "points": sorted((p.name, sorted(p.context.items()), p.step, p.value, p.timestamp) for p in history),
        "artifacts": sorted(
            (a.name, a.artifact_type, a.sha256, a.size, a.metadata, Path(a.file_path).read_bytes())
            for a in repo.list_artifacts_sync(run_id)
        ),
    }


def test_copy_keeps_every_field_point_and_artifact(tmp_path: Path) -> None:
    ids = _record(tmp_path)
    with (
        open_repository("memory", store=f"{tmp_path}/src") as src,
        open_repository("memory", store=f"{tmp_path}/dst") as dst,
    ):
        report = src.copy_to_sync(dst)

        assert sorted(report.copied) == sorted(ids)
        assert report.points == 240 + 1 + 2
        assert report.artifacts == 1
        for run_id in ids:
            assert _everything(dst, run_id) == _everything(src, run_id)
        assert dst.get_experiment_sync(ids[1]).status is mltrack.ExperimentStatus.FAILED


def test_a_second_copy_adds_nothing(tmp_path: Path) -> None:
    ids = _record(tmp_path)
    with (
        open_repository("memory", store=f"{tmp_path}/src") as src,
        open_repository("memory", store=f"{tmp_path}/dst") as dst,
    ):
        src.copy_to_sync(dst)
        before = {r: _everything(dst, r) for r in ids}

        again = src.copy_to_sync(dst)

        assert again.copied == () and again.points == 0
        assert sorted(again.skipped) == sorted(ids)
        assert {r: _everything(dst, r) for r in ids} == before


def test_an_incomplete_earlier_copy_is_replaced(tmp_path: Path) -> None:
    ids = _record(tmp_path)
    with (
        open_repository("memory", store=f"{tmp_path}/src") as src,
        open_repository("memory", store=f"{tmp_path}/dst") as dst,
    ):
        src.copy_to_sync(dst, [ids[0]])
        # An earlier copy cut off: the target holds the run without its validation points.
        dst.delete_experiment_sync(ids[0])
        dst._write("mltrack_create_run", run=mltrack.ExperimentRun(id=ids[0], experiment_name="exp-a"))

        report = src.copy_to_sync(dst, [ids[0][:8]])  # a unique prefix works too

        assert report.replaced == (ids[0],)
        assert _everything(dst, ids[0]) == _everything(src, ids[0])


def test_running_runs_are_not_copied_and_unknown_ids_fail_before_any_write(tmp_path: Path) -> None:
    ids = _record(tmp_path)
    live = mltrack.start_run("still-going")
    live.log_metric("loss", 1.0, step=0)
    tracking_session().flush()
    with (
        open_repository("memory", store=f"{tmp_path}/src") as src,
        open_repository("memory", store=f"{tmp_path}/dst") as dst,
    ):
        with pytest.raises(mltrack.RunNotFoundError):
            src.copy_to_sync(dst, [ids[0], "ffffffffffffffffffffffff"])
        assert dst.list_experiments_sync() == []

        report = src.copy_to_sync(dst)

        assert report.running == (live.id,)
        assert sorted(r.experiment_id for r in dst.list_experiments_sync()) == sorted(ids)
    live.finish()


def test_cli_copy_reports_what_it_did(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = _record(tmp_path)
    argv = ["copy", "--from", "memory", "--from-option", f"store={tmp_path}/src"]
    argv += ["--to", "memory", "--to-option", f"store={tmp_path}/dst"]

    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == (
        "copied 3 run(s) from memory to memory (243 points, 1 artifact(s)); 0 already there"
    )
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["skipped"]) == sorted(ids) and report["copied"] == []


def test_cli_copy_refuses_the_same_store_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["copy", "--from", "memory", "--to", "memory"]) == 2
    assert "same store" in capsys.readouterr().err
    assert main(["copy", "--from", "memory", "--to", "memory", "--to-option", "store"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_write_run_refuses_a_run_still_running_and_names_the_fix(tmp_path: Path) -> None:
    from mltrack.errors import RunStateError

    mltrack.configure_backend("memory", store=f"{tmp_path}/src")
    run = mltrack.start_run("still-going")
    run.log_metric("loss", 1.0, step=0)
    tracking_session().flush()
    with open_repository("memory", store=f"{tmp_path}/src") as src:
        summary = src.get_experiment_sync(run.id)
    with (
        open_repository("memory", store=f"{tmp_path}/dst") as dst,
        pytest.raises(RunStateError, match="still RUNNING: write it once it has finished"),
    ):
        dst.write_run_sync(summary)
    run.finish()
