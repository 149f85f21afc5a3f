"""What a user sees when a command fails: one line on stderr saying what to do, exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest

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
