"""Several training processes write to one SQLite store at once, reading it meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _child import run_python

_CHILD = """
    import json, sys, mltrack
    from mltrack.factory import experiment_repository, health_sync
    steps = int(sys.argv[2])
    runs = [mltrack.start_run("concurrent", {"proc": int(sys.argv[1])}, name=f"p{sys.argv[1]}-{k}") for k in range(2)]
    for step in range(steps):
        for run in runs:
            run.log_metrics({"a": float(step), "b": -float(step)}, step=step)
        if step % 1000 == 0:
            experiment_repository().list_experiments_sync()  # a reader among the writers
    for run in runs:
        run.finish()
    health = health_sync()
    print(json.dumps(dict(healthy=health.is_healthy, issues=health.issues, ids=[r.id for r in runs])))
"""


@pytest.mark.parametrize(("processes", "steps"), [(2, 3000), pytest.param(4, 20000, marks=pytest.mark.slow)])
def test_processes_writing_one_store_at_once_lose_nothing(
    mlflow_dir: Path, processes: int, steps: int
) -> None:
    env = {**os.environ, "ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(mlflow_dir)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_CHILD), str(i), str(steps)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    ids: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=600)
        assert child.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["healthy"], report["issues"]
        ids += report["ids"]
    got = run_python(
        f"""
        import json
        from mltrack.factory import experiment_repository
        repo = experiment_repository()
        out = {{}}
        for run_id in {ids!r}:
            history = repo.get_experiment_metrics_sync(run_id)
            out[run_id] = [len(history.series("a")), list(history.series("b").values)[-1],
                           repo.get_experiment_sync(run_id).status.value]
        print(json.dumps(out))
        """,
        env={"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(mlflow_dir)},
    )
    assert got == {run_id: [steps, -(steps - 1), "completed"] for run_id in ids}
