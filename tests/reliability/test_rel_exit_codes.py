"""Issue 19 case 6: a run ended by ``sys.exit`` reads as the shell reads the exit code.

``sys.exit(0)`` and ``sys.exit(None)`` finish the run COMPLETED; any other code (``sys.exit(3)``,
``sys.exit("fatal: ...")``, which Python prints and turns into 1) finishes it FAILED, tagged
``mltrack:exit-code=<code>``. Both ways a run can be open at that moment are covered: inside
``with mltrack.start_run(...)`` (the block sees the ``SystemExit``) and a run left open until
the interpreter exits (mltrack's exit handler finishes it). Each case is a real trainer
process writing to Aim or MLflow through mltrack's writer process; a fresh process reads
the runs back, and the trainer's own exit code must be the one it asked for.
"""

from __future__ import annotations

import json
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from _reliability import child_env, popen_python, record, run_python

# (how the run is open, the code passed to sys.exit, the status and exit-code tag expected)
CASES: list[tuple[str, Any, str, int | None]] = [
    ("with", 3, "failed", 3),
    ("with", "fatal: no data", "failed", 1),
    ("with", 0, "completed", None),
    ("open", 3, "failed", 3),
    ("open", "fatal: no data", "failed", 1),
    ("open", None, "completed", None),
]
# MLflow's import makes each trainer slower: its quick run takes one case of each kind.
QUICK = [CASES[0], CASES[4], CASES[5]]


def _trainer(how: str, code: Any) -> str:
    """A trainer that logs a point and calls ``sys.exit(code)`` with its run open ``how``."""
    body = "run.log_metric('loss', 0.5, step=1)\nprint(run.id, flush=True)\nsys.exit(CODE)"
    if how == "with":
        script = "with mltrack.start_run('exit-codes') as run:\n" + textwrap.indent(body, "    ")
    else:
        script = "run = mltrack.start_run('exit-codes')\n" + body
    return "import sys, mltrack\nCODE = " + repr(code) + "\n" + script + "\n"


def _run_trainer(env: dict[str, str], how: str, code: Any) -> tuple[str, int, str]:
    """Run one trainer to its end: its run id, exit code and stderr."""
    proc = popen_python(_trainer(how, code), env=env)
    out, err = proc.communicate(timeout=180)
    lines = out.split()
    return (lines[-1] if lines else ""), proc.returncode, err


def _read_runs(backend: str, store: Path, run_ids: list[str]) -> dict[str, Any]:
    """Status and tags of each run, as a fresh process reads them through mltrack."""
    runs: dict[str, Any] = run_python(
        f"""
        import json, mltrack.factory
        from mltrack.config import configure_backend
        configure_backend({backend!r}, storage_path={str(store)!r})
        repo = mltrack.factory.experiment_repository()
        out = {{}}
        for run_id in {run_ids!r}:
            run = repo.get_experiment_sync(run_id)
            out[run_id] = dict(status=run.status.value, tags=list(run.tags))
        print(json.dumps(out))
        """
    )
    return runs


@pytest.mark.parametrize(
    ("backend", "cases"),
    [
        pytest.param("aim", CASES, id="aim"),
        pytest.param("mlflow", QUICK, id="mlflow"),
        pytest.param("mlflow", CASES, id="mlflow-all", marks=pytest.mark.slow),
    ],
)
def test_sys_exit_codes_decide_the_status(
    backend: str, cases: list[tuple[str, Any, str, int | None]], request: pytest.FixtureRequest
) -> None:
    store: Path = request.getfixturevalue("aim_repo" if backend == "aim" else "mlflow_dir")
    env = child_env({"ML_TRACKING_BACKEND": backend, "ML_STORAGE_PATH": str(store)})
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda case: _run_trainer(env, case[0], case[1]), cases))
    for (how, code, _, _), (run_id, _, err) in zip(cases, results):
        assert run_id, f"trainer ({how}, sys.exit({code!r})) printed no run id: {err[-2000:]}"
    stored = _read_runs(backend, store, [run_id for run_id, _, _ in results])
    wrong = []
    for (how, code, status, kept), (run_id, returncode, _) in zip(cases, results):
        got = stored[run_id]
        tags = [t for t in got["tags"] if t.startswith("mltrack:exit-code=")]
        expected_tags = [] if kept is None else [f"mltrack:exit-code={kept}"]
        expected_rc = 1 if isinstance(code, str) else (code or 0)
        record(
            "exit-code",
            backend=backend,
            run_open=how,
            code=code,
            process_exit=returncode,
            status=got["status"],
            tags=json.dumps(tags),
        )
        if (got["status"], tags, returncode) != (status, expected_tags, expected_rc):
            wrong.append((how, code, got["status"], tags, returncode))
    assert wrong == [], f"(how open, sys.exit code, status, tags, process exit code) wrong: {wrong}"
