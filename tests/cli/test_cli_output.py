"""What the ``mltrack`` commands print: stars in compare, columns in ls, figures of plot, typo hints."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from _cli_helpers import run_cli, run_mltrack

pytest.importorskip("mltrack_aim")

Cli = Callable[..., subprocess.CompletedProcess[str]]


@attrs.frozen
class Pair:
    repo: Path
    better: str
    worse: str


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    """Two finished runs: one better by reward and loss, slower, and tied on accuracy."""
    import mltrack
    from mltrack import factory

    repo = tmp_path_factory.mktemp("pair") / "aim_logs"
    mltrack.configure_backend("aim", repo_path=str(repo))
    ids = []
    for name, reward, loss, elapsed in (("better", 200.0, 0.1, 30.0), ("worse", 150.0, 0.4, 10.0)):
        with mltrack.start_run("pair", name=name) as run:
            run.log_metrics(
                {
                    "reward": reward,
                    "loss": loss,
                    "accuracy": 0.9,
                    "time/time_elapsed": elapsed,
                    "wall_time_seconds": elapsed + 1,
                    "episodes": elapsed / 10,
                },
                step=0,
            )
        ids.append(run.id)
    factory.reset()
    mltrack.reset_configuration()
    return Pair(repo, ids[0], ids[1])


@pytest.fixture
def pair_cli(pair: Pair) -> Cli:
    return lambda *args: run_cli(pair.repo, *args)


def _row(out: str, metric: str) -> str:
    return next(line for line in out.splitlines() if line.split()[:1] == [metric])


# --- compare: the best star -------------------------------------------------------------


def test_compare_stars_the_highest_reward_and_the_lowest_loss(pair_cli: Cli, pair: Pair) -> None:
    proc = pair_cli("compare", pair.better, pair.worse)
    assert proc.returncode == 0, proc.stderr
    assert _row(proc.stdout, "reward").split() == ["reward", "200", "*", "150"]
    assert _row(proc.stdout, "loss").split() == ["loss", "0.1", "*", "0.4"]
    assert f"best by reward: better ({pair.better[:8]})" in proc.stdout


@pytest.mark.parametrize("metric", ["time/time_elapsed", "wall_time_seconds", "episodes"])
def test_compare_puts_no_star_on_a_metric_without_a_direction(pair_cli: Cli, pair: Pair, metric: str) -> None:
    proc = pair_cli("compare", pair.better, pair.worse)
    assert proc.returncode == 0, proc.stderr
    assert "*" not in _row(proc.stdout, metric)
    assert f"best by {metric}" not in proc.stdout


def test_compare_puts_no_star_on_a_tie_and_says_it_is_a_tie(pair_cli: Cli, pair: Pair) -> None:
    proc = pair_cli("compare", pair.better, pair.worse)
    assert proc.returncode == 0, proc.stderr
    assert "*" not in _row(proc.stdout, "accuracy")
    assert (
        f"best by accuracy: a tie at 0.9 between better ({pair.better[:8]}) and worse ({pair.worse[:8]})"
        in proc.stdout
    )


def test_compare_json_names_no_best_run_for_ties_or_undirected_metrics(pair_cli: Cli, pair: Pair) -> None:
    import json

    data = json.loads(pair_cli("compare", pair.better, pair.worse, "--json").stdout)
    assert data["best"] == {"reward": pair.better, "loss": pair.better}
    assert data["ties"] == {"accuracy": [pair.better, pair.worse]}


# --- ls: metric columns and run ids -------------------------------------------------------

PAIR_METRICS = ("reward", "loss", "accuracy", "time/time_elapsed", "wall_time_seconds", "episodes")


def _ls(repo: Path, *args: str, columns: str) -> subprocess.CompletedProcess[str]:
    return run_mltrack("ls", *args, ML_TRACKING_BACKEND="aim", AIM_REPO_PATH=str(repo), COLUMNS=columns)


def _assert_left_out_columns_are_noted(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    shown = [m for m in PAIR_METRICS if m in header]
    left_out = [m for m in PAIR_METRICS if m not in header]
    assert shown and left_out
    (note,) = proc.stderr.splitlines()
    assert note.startswith("note: ")
    assert all(m in note for m in left_out)
    assert not any(m in note for m in shown)
    assert "--metric NAME" in note
    assert "--json" in note


def test_ls_at_80_columns_notes_the_metric_columns_it_left_out(pair: Pair) -> None:
    _assert_left_out_columns_are_noted(_ls(pair.repo, columns="80"))


def test_ls_piped_with_no_terminal_width_notes_the_metric_columns_it_left_out(pair: Pair) -> None:
    _assert_left_out_columns_are_noted(_ls(pair.repo, columns=""))


def test_ls_shows_every_metric_column_that_fits_and_notes_nothing(pair: Pair) -> None:
    proc = _ls(pair.repo, columns="200")
    assert proc.returncode == 0, proc.stderr
    header = proc.stdout.splitlines()[0].split()
    assert all(m in header for m in PAIR_METRICS)
    assert proc.stderr == ""


LONG_NAME = "a-run-name-long-enough-to-be-cut-at-eighty-columns"


@pytest.fixture(scope="module")
def long_named(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A repository with one run whose name and experiment name are long."""
    import mltrack
    from mltrack import factory

    repo = tmp_path_factory.mktemp("long") / "aim_logs"
    mltrack.configure_backend("aim", repo_path=str(repo))
    with mltrack.start_run("an-experiment-name-that-is-long-as-well", name=LONG_NAME) as run:
        run.log_metrics({"reward": 123.5, "loss": 0.25, "accuracy": 0.75}, step=0)
    factory.reset()
    mltrack.reset_configuration()
    return repo, run.id


def test_ls_at_80_columns_with_metric_keeps_the_run_id_whole_and_cuts_the_name(
    long_named: tuple[Path, str],
) -> None:
    repo, run_id = long_named
    proc = _ls(repo, "--metric", "reward", "--metric", "loss", columns="80")
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()
    assert row.split()[0] == run_id[:8]
    assert LONG_NAME not in row
    assert "…" in row
    assert header.split()[-2:] == ["reward", "loss"]
    assert row.split()[-2:] == ["123.5", "0.25"]
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_ls_with_more_metric_columns_than_fit_prints_wider_lines_and_cuts_no_value(
    long_named: tuple[Path, str],
) -> None:
    repo, run_id = long_named
    proc = _ls(repo, "--metric", "reward", "--metric", "loss", "--metric", "accuracy", columns="80")
    assert proc.returncode == 0, proc.stderr
    header, row = proc.stdout.splitlines()
    assert row.split()[0] == run_id[:8]
    assert header.split()[-3:] == ["reward", "loss", "accuracy"]
    assert row.split()[-3:] == ["123.5", "0.25", "0.75"]


# --- plot: several metrics ----------------------------------------------------------------

LINE_COLOURS = {(31, 119, 180), (255, 127, 14)}  # matplotlib's first two: one per run


def _line_colours(image: object) -> set[tuple[int, int, int]]:
    colours = image.getcolors(maxcolors=1_000_000)  # type: ignore[attr-defined]
    return {c for n, c in colours if c in LINE_COLOURS and n > 50}


def test_plot_with_two_metrics_draws_a_panel_for_each_with_a_line_per_run(
    cli: Cli, runs: Any, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    from PIL import Image

    out = tmp_path / "both.png"
    proc = cli(
        "plot", runs.ppo_fast, runs.ppo_slow, "--metric", "reward", "--metric", "loss", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"wrote {out}"
    image = Image.open(out).convert("RGB")
    width, height = image.size
    assert height > 500  # taller than a one-metric plot: one panel below the other
    assert _line_colours(image.crop((0, 0, width, height // 2))) == LINE_COLOURS
    assert _line_colours(image.crop((0, height // 2, width, height))) == LINE_COLOURS


def test_plot_help_says_metric_is_repeatable(cli: Cli) -> None:
    proc = cli("plot", "--help")
    assert "repeatable" in proc.stdout
    assert "one panel per metric" in proc.stdout
