"""`mltrack show` on a run with many metrics: the first series and a count of the rest, --all, --metric PATTERN."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mltrack.cli.app import cli

TRAIN, EVAL = 90, 30  # train/m000..train/m089 and eval/m000..eval/m029, 120 series in all
SHOWN = 50  # what `show` lists before summing up


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory, repo_template: Path) -> tuple[Path, str]:
    """An Aim repository with one run of 120 metrics (2 points each) and one final metric per metric."""
    import mltrack
    from mltrack import factory

    repo = tmp_path_factory.mktemp("show-wide") / "aim_logs"
    shutil.copytree(repo_template, repo)
    mltrack.configure_backend("aim", repo_path=str(repo))
    try:
        with mltrack.start_run("wide", {"lr": 0.1}) as run:
            for step in range(2):
                run.log_metrics({f"train/m{i:03d}": i + step for i in range(TRAIN)}, step=step)
                run.log_metrics({f"eval/m{i:03d}": -i - step for i in range(EVAL)}, step=step)
    finally:
        factory.reset()
        mltrack.reset_configuration()
    return repo, run.id


def run_cli(repo: Path, *args: str) -> Result:
    """``mltrack ARGS`` on the repository, in this process (a fresh interpreter costs seconds a call)."""
    env = {"ML_TRACKING_BACKEND": "aim", "AIM_REPO_PATH": str(repo), "COLUMNS": "160"}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def _metric_rows(out: str) -> list[list[str]]:
    """The rows of the metrics table (name, count, first, last, min, max, last step)."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["metric", "count"])
    rows = []
    for ln in lines[start + 1 :]:
        if not ln.strip() or ln.strip().startswith("..."):
            break
        rows.append(ln.split())
    return rows


def _final_lines(out: str) -> list[str]:
    lines = out.splitlines()
    start = lines.index("final metrics")
    return [ln.strip() for ln in lines[start + 1 :] if ln.startswith("  ") and " = " in ln]


def test_show_lists_the_first_series_and_counts_the_rest(wide: tuple[Path, str]) -> None:
    repo, run_id = wide
    proc = run_cli(repo, "show", run_id)
    assert proc.exit_code == 0, proc.output
    rows = _metric_rows(proc.stdout)
    assert len(rows) == SHOWN
    everything = sorted([f"eval/m{i:03d}" for i in range(EVAL)] + [f"train/m{i:03d}" for i in range(TRAIN)])
    assert [r[0] for r in rows] == everything[:SHOWN]
    assert rows[0] == ["eval/m000", "2", "0", "-1", "-1", "0", "1"]
    left = TRAIN + EVAL - SHOWN
    assert f"... and {left} more metric series (--all lists them, --metric PATTERN picks some)" in proc.stdout
    assert len(_final_lines(proc.stdout)) == SHOWN
    assert f"... and {left} more final metrics" in proc.stdout
    assert len(proc.stdout.splitlines()) < 2 * SHOWN + 20


def test_show_all_lists_every_series(wide: tuple[Path, str]) -> None:
    repo, run_id = wide
    proc = run_cli(repo, "show", run_id, "--all")
    assert proc.exit_code == 0, proc.output
    rows = _metric_rows(proc.stdout)
    assert len(rows) == TRAIN + EVAL
    assert ["train/m089", "2", "89", "90", "89", "90", "1"] in rows
    assert "more metric series" not in proc.stdout
    assert len(_final_lines(proc.stdout)) == TRAIN + EVAL


def test_show_metric_pattern_picks_matching_series_and_final_metrics(wide: tuple[Path, str]) -> None:
    repo, run_id = wide
    proc = run_cli(repo, "show", run_id, "--metric", "eval/*", "--metric", "train/m08?")
    assert proc.exit_code == 0, proc.output
    rows = _metric_rows(proc.stdout)
    assert [r[0] for r in rows] == [f"eval/m{i:03d}" for i in range(EVAL)] + [
        f"train/m08{i}" for i in range(10)
    ]
    assert "more metric series" not in proc.stdout
    assert _final_lines(proc.stdout)[-1] == "train/m089 = 90"

    data = json.loads(run_cli(repo, "show", run_id, "--metric", "train/m00*", "--json").stdout)
    assert [m["metric"] for m in data["metrics"]] == [f"train/m00{i}" for i in range(10)]
    assert sorted(data["final_metrics"]) == [f"train/m00{i}" for i in range(10)]
    assert data["config"] == {"lr": 0.1}


def test_show_json_without_a_pattern_has_every_series(wide: tuple[Path, str]) -> None:
    repo, run_id = wide
    data = json.loads(run_cli(repo, "show", run_id, "--json").stdout)
    assert len(data["metrics"]) == TRAIN + EVAL
    assert len(data["final_metrics"]) == TRAIN + EVAL


def test_show_metric_pattern_matching_nothing_says_so(wide: tuple[Path, str]) -> None:
    repo, run_id = wide
    proc = run_cli(repo, "show", run_id, "--metric", "nothing*")
    assert proc.exit_code == 0, proc.output
    assert "no metric matches 'nothing*'" in proc.stdout
    assert "final metrics" not in proc.stdout
