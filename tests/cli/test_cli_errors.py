"""What a user sees when a command fails: one line on stderr saying what to do, exit code 1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _child import env_without
from _cli_helpers import run_mltrack

pytest.importorskip("mltrack_aim")


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def test_export_to_a_path_that_cannot_be_created_is_one_error_line(cli, runs, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = cli("export", runs.ppo_fast, "--out", str(blocker / "metrics.csv"))
    assert proc.returncode == 1
    assert str(blocker) in _one_error_line(proc.stderr)


def test_ls_on_a_storage_path_that_is_a_file_is_one_error_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_mltrack("ls", ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(blocker))
    assert proc.returncode == 1
    assert str(blocker) in _one_error_line(proc.stderr)


def test_health_on_a_storage_path_that_is_a_file_exits_1_without_a_traceback(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_mltrack("health", ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(blocker))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert str(blocker) in proc.stdout + proc.stderr


def test_an_unknown_run_is_one_error_line_in_lower_case(cli) -> None:
    proc = cli("show", "ffffffffff")
    assert proc.returncode == 1
    assert "no run 'ffffffffff'" in _one_error_line(proc.stderr)


def test_a_missing_option_is_still_a_usage_error_with_exit_code_2(cli) -> None:
    proc = cli("plot", "abc")
    assert proc.returncode == 2
    assert "Usage: mltrack plot" in proc.stderr


# --- reading a path that holds no store ---------------------------------------------------


def test_ls_on_a_missing_folder_says_there_is_no_repository_and_creates_none(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    proc = run_mltrack("ls", ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(typo))
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr) == (
        f"error: no Aim repository at {typo} (ML_STORAGE_PATH): check the path, or write a run there first"
    )
    assert not typo.exists()


def test_ls_on_a_folder_without_a_repository_creates_none(tmp_path: Path) -> None:
    proc = run_mltrack("ls", ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(tmp_path))
    assert proc.returncode == 1
    assert f"no Aim repository at {tmp_path} (ML_STORAGE_PATH)" in _one_error_line(proc.stderr)
    assert list(tmp_path.iterdir()) == []


def test_the_missing_repository_error_names_aim_repo_path_when_that_was_set(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    proc = run_mltrack("ls", ML_TRACKING_BACKEND="aim", AIM_REPO_PATH=str(typo))
    assert f"no Aim repository at {typo} (AIM_REPO_PATH)" in _one_error_line(proc.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ("show", "3f2a9c"),
        ("compare", "3f2a9c", "8be41d"),
        ("export", "3f2a9c", "--out", "{tmp}/m.csv"),
        ("plot", "3f2a9c", "--metric", "reward", "--out", "{tmp}/r.png"),
        ("ui",),
        ("rm", "3f2a9c", "--yes"),
    ],
    ids=lambda args: args[0],
)
def test_every_reading_command_refuses_a_missing_store_and_creates_none(
    args: tuple[str, ...], tmp_path: Path
) -> None:
    typo = tmp_path / "typo"
    proc = run_mltrack(
        *(a.format(tmp=tmp_path) for a in args), ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(typo)
    )
    assert proc.returncode == 1
    assert f"no Aim repository at {typo} (ML_STORAGE_PATH)" in _one_error_line(proc.stderr)
    assert not typo.exists()


def test_health_on_a_missing_store_reports_it_unhealthy_and_creates_none(tmp_path: Path) -> None:
    typo = tmp_path / "typo"
    proc = run_mltrack("health", ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(typo))
    assert proc.returncode == 1
    assert "backend: aim  UNHEALTHY" in proc.stdout
    assert f"issue: no Aim repository at {typo} (ML_STORAGE_PATH)" in proc.stdout
    assert not typo.exists()


def test_copy_from_a_missing_store_names_the_option_and_creates_neither(tmp_path: Path) -> None:
    source, target = tmp_path / "typo", tmp_path / "backup"
    proc = run_mltrack(
        "copy",
        "--from",
        "aim",
        "--to",
        "aim",
        "--from-option",
        f"repo_path={source}",
        "--to-option",
        f"repo_path={target}",
    )
    assert proc.returncode == 1
    assert f"no Aim repository at {source} (the repo_path option)" in _one_error_line(proc.stderr)
    assert not source.exists()
    assert not target.exists()


def test_writing_a_run_still_creates_the_repository_that_ls_then_lists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mltrack
    from mltrack import factory

    fresh = tmp_path / "fresh"
    monkeypatch.setenv("ML_TRACKING_BACKEND", "aim")
    monkeypatch.setenv("ML_STORAGE_PATH", str(fresh))
    with mltrack.start_run("first-run") as run:
        run.log_metric("reward", 1.0, step=0)
    factory.reset()
    assert (fresh / ".aim").is_dir()
    proc = run_mltrack("ls", ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(fresh))
    assert proc.returncode == 0, proc.stderr
    assert run.id[:8] in proc.stdout


def test_ls_on_mlflow_without_a_database_says_so_and_creates_none(tmp_path: Path) -> None:
    pytest.importorskip("mltrack_mlflow")
    typo = tmp_path / "typo"
    proc = run_mltrack("ls", ML_TRACKING_BACKEND="mlflow", ML_STORAGE_PATH=str(typo))
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr) == (
        f"error: no MLflow store at {typo} (ML_STORAGE_PATH): no mlflow.db there; "
        "check the path, or write a run there first"
    )
    assert not typo.exists()


def test_health_on_mlflow_without_a_database_reports_it_unhealthy_and_creates_none(tmp_path: Path) -> None:
    pytest.importorskip("mltrack_mlflow")
    proc = run_mltrack("health", ML_TRACKING_BACKEND="mlflow", ML_STORAGE_PATH=str(tmp_path))
    assert proc.returncode == 1
    assert f"issue: no MLflow store at {tmp_path} (ML_STORAGE_PATH)" in proc.stdout
    assert list(tmp_path.iterdir()) == []


# --- the hint names the setting the user used ---------------------------------------------


@pytest.fixture
def read_only_repo(tmp_path: Path) -> Iterator[Path]:
    """An Aim repository holding one run, on a tmpfs remounted read-only (root only)."""
    import subprocess
    import sys

    point = tmp_path / "ro"
    point.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point)], capture_output=True
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mount.stderr.decode().strip()}")
    try:
        record = (
            "import mltrack\n"
            "with mltrack.start_run('ro') as run:\n"
            "    run.log_metric('reward', 1.0, step=0)\n"
        )
        env = env_without(("ML_", "MLTRACK_", "AIM_"))
        env.update(ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(point))
        subprocess.run([sys.executable, "-c", record], check=True, env=env, timeout=300)
        subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_health_on_a_read_only_store_names_ml_storage_path_not_aim_repo_path(read_only_repo: Path) -> None:
    proc = run_mltrack("health", ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH=str(read_only_repo))
    assert proc.returncode == 1
    assert "is not writable" in proc.stdout
    assert "move the repository (ML_STORAGE_PATH)" in proc.stdout
    assert "AIM_REPO_PATH" not in proc.stdout


# --- typos get a suggestion -----------------------------------------------------------------

TYPO_LINE = "error: no metric 'rewrad' in these runs; did you mean 'reward'?"


def test_plot_with_a_mistyped_metric_suggests_the_right_one(cli, runs, tmp_path: Path) -> None:
    proc = cli("plot", runs.ppo_fast, "--metric", "rewrad", "--out", str(tmp_path / "r.png"))
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr) == TYPO_LINE
    assert not (tmp_path / "r.png").exists()


def test_compare_with_a_mistyped_metric_suggests_the_right_one(cli, runs) -> None:
    proc = cli("compare", runs.ppo_fast, runs.ppo_slow, "--metric", "rewrad")
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr) == TYPO_LINE


def test_ls_sorted_by_a_mistyped_metric_suggests_the_right_one(cli) -> None:
    proc = cli("ls", "--sort", "rewrad")
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr) == TYPO_LINE


def test_export_of_a_mistyped_metric_suggests_the_right_one(cli, runs, tmp_path: Path) -> None:
    proc = cli("export", runs.ppo_fast, "--metric", "rewrad", "--out", str(tmp_path / "m.csv"))
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr) == TYPO_LINE
    assert not (tmp_path / "m.csv").exists()


def test_a_metric_nothing_like_any_lists_the_metrics_there_are(cli, runs) -> None:
    proc = cli("compare", runs.ppo_fast, runs.ppo_slow, "--metric", "zzz")
    assert proc.returncode == 1
    assert _one_error_line(proc.stderr) == "error: no metric 'zzz' in these runs; they have: loss, reward"


def test_a_mistyped_run_id_prefix_suggests_the_right_one(cli, runs) -> None:
    prefix = runs.ppo_fast[:8]
    typo = prefix[:-1] + ("0" if prefix[-1] != "0" else "1")
    proc = cli("show", typo)
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert f"no run {typo!r}" in line
    assert f"did you mean {prefix!r}?" in line
