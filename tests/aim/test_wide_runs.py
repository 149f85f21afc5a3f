"""A run with thousands of metric names reads back whole and right, through the repository, in a fresh process."""

from __future__ import annotations

from pathlib import Path

import pytest

import mltrack
from mltrack_aim import configure_aim_backend

from _child import run_python

NAMES = 1500
STEPS = 3
VAL_NAMES = 150  # the first 150 names are also logged in the context {"subset": "val"}


def _value(i: int, step: int, val: bool) -> float:
    return (-1.0 if val else 1.0) * (i * 10 + step + 0.25)


def _record(aim_repo: Path) -> str:
    configure_aim_backend(repo_path=aim_repo, experiment_name="wide")
    try:
        with mltrack.start_run() as run:
            for step in range(STEPS):
                run.log_metrics(
                    {f"group{i % 7}/m{i:04d}": _value(i, step, False) for i in range(NAMES)}, step=step
                )
                run.log_metrics(
                    {f"group{i % 7}/m{i:04d}": _value(i, step, True) for i in range(VAL_NAMES)},
                    step=step,
                    context={"subset": "val"},
                )
    finally:
        mltrack.factory.reset()
        mltrack.reset_configuration()
    return run.id


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory: pytest.TempPathFactory, repo_template: Path) -> tuple[Path, str]:
    import shutil

    repo = tmp_path_factory.mktemp("wide") / "aim_logs"
    shutil.copytree(repo_template, repo)
    return repo, _record(repo)


# One fresh process reads the run three ways: every metric by the bulk reads, some names, and
# every metric through Aim's public reader (MLTRACK_AIM_BATCH=0, as on an unverified Aim).
_READ = """
import json, os
from mltrack.factory import open_repository

def rows(history):
    return [
        [s.name, dict(s.context), [int(x) for x in s.steps], [float(x) for x in s.values], len(s.timestamps)]
        for s in history.all_series
    ]

out = {{}}
with open_repository("aim", must_exist=True, repo_path={repo!r}) as repo:
    out["all"] = rows(repo.get_experiment_metrics_sync({run!r}))
    out["some"] = rows(repo.get_experiment_metrics_sync({run!r}, names={names!r}))
os.environ["MLTRACK_AIM_BATCH"] = "0"
with open_repository("aim", must_exist=True, repo_path={repo!r}) as repo:
    out["public"] = rows(repo.get_experiment_metrics_sync({run!r}))
print(json.dumps(out))
"""

SOME = ["group0/m0000", "group3/m0143", "group1/m1499", "no/such/metric"]


@pytest.fixture(scope="module")
def read_back(wide_run: tuple[Path, str]) -> dict[str, list[list[object]]]:
    repo, run_id = wide_run
    result: dict[str, list[list[object]]] = run_python(_READ.format(repo=str(repo), run=run_id, names=SOME))
    return result


def _expected(names: set[str] | None = None) -> dict[tuple[str, str], list[float]]:
    out = {}
    for i in range(NAMES):
        name = f"group{i % 7}/m{i:04d}"
        if names is not None and name not in names:
            continue
        out[(name, "")] = [_value(i, s, False) for s in range(STEPS)]
        if i < VAL_NAMES:
            out[(name, "val")] = [_value(i, s, True) for s in range(STEPS)]
    return out


def _as_table(rows: list[list[object]]) -> dict[tuple[str, str], list[float]]:
    table: dict[tuple[str, str], list[float]] = {}
    for name, context, steps, values, n_times in rows:
        assert steps == list(range(STEPS)), name
        assert n_times == STEPS
        assert context in ({}, {"subset": "val"}), context
        key = (str(name), "val" if context else "")
        assert key not in table, f"{key} read twice"
        table[key] = values  # type: ignore[assignment]
    return table


@pytest.mark.parametrize("how", ["all", "public"], ids=["bulk-reads", "aim-public-reads"])
def test_every_name_value_and_context_of_a_wide_run_reads_back_in_a_fresh_process(
    read_back: dict[str, list[list[object]]], how: str
) -> None:
    assert _as_table(read_back[how]) == _expected()


def test_reading_some_names_of_a_wide_run_returns_just_those_in_every_context(
    read_back: dict[str, list[list[object]]],
) -> None:
    table = _as_table(read_back["some"])
    assert table == _expected(set(SOME))
    assert sorted(table) == [
        ("group0/m0000", ""),
        ("group0/m0000", "val"),
        ("group1/m1499", ""),
        ("group3/m0143", ""),
        ("group3/m0143", "val"),
    ]
