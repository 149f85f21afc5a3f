"""What the ``mltrack`` commands print: stars in compare, columns in ls, figures of plot, typo hints."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest

from _cli_helpers import run_cli

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
