"""Helpers of the reliability suite: child interpreters, repetition counts, measured numbers."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import _child

REPORT_ENV = "MLTRACK_RELIABILITY_REPORT"
"""If set, every test appends its measured numbers as one JSON line to this file."""


def repetitions(env_name: str, default: int) -> int:
    """How many times to repeat a fault: ``env_name`` if set, else ``default``."""
    raw = os.environ.get(env_name, "")
    return int(raw) if raw.strip() else default


def record(case: str, **numbers: Any) -> dict[str, Any]:
    """Print the measured numbers of one fault (and append them to the report file, if asked)."""
    line = {"case": case, **numbers}
    print("RELIABILITY " + json.dumps(line, default=str), flush=True)
    target = os.environ.get(REPORT_ENV)
    if target:
        with Path(target).open("a") as fh:
            fh.write(json.dumps(line, default=str) + "\n")
    return line


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without mltrack settings, plus ``extra``."""
    return _child.child_env(extra, clean=True)


def popen_python(
    code: str, *, env: dict[str, str] | None = None, stdin: bool = False
) -> subprocess.Popen[str]:
    """Start ``code`` in a new interpreter without this process's mltrack settings (see :mod:`_child`)."""
    return _child.popen_python(code, env=env, clean=True, stdin=stdin)


def run_python(code: str, *, timeout: float = 300, env: dict[str, str] | None = None) -> Any:
    """Run ``code`` in a new interpreter (a fresh reader) without this process's mltrack settings."""
    return _child.run_python(code, timeout=timeout, env=env, clean=True)


def read_run(repo: str, run_id: str, *, wait_finished: float = 0.0, metric: str = "loss") -> dict[str, Any]:
    """What a fresh reader process sees of one run: status, end time, stored steps of ``metric``.

    With ``wait_finished`` the reader polls until the run is no longer RUNNING (or that many
    seconds passed) and reports how long it waited. A trainer killed while its writer process
    was still starting has its run stored by that process a little later: the reader waits for
    the run to appear within the same time.
    """
    return run_python(
        f"""
        import json, time, mltrack
        from mltrack_aim import configure_aim_backend
        from mltrack.errors import RunNotFoundError
        configure_aim_backend(repo_path={repo!r})
        repo = mltrack.factory.experiment_repository()
        started = time.monotonic()
        while True:
            try:
                run = repo.get_experiment_sync({run_id!r})
            except RunNotFoundError:
                if time.monotonic() - started > {wait_finished}:
                    raise
                time.sleep(0.5)
                continue
            if run.status.value != "running" or time.monotonic() - started > {wait_finished}:
                break
            time.sleep(0.5)
        waited = time.monotonic() - started
        history = repo.get_experiment_metrics_sync({run_id!r})
        steps = [int(s) for s in history.series({metric!r}).steps] if {metric!r} in history else []
        print(json.dumps(dict(status=run.status.value, end=run.end_time is not None, waited=waited,
                              steps=steps, config=run.config, final=run.final_metrics, tags=list(run.tags))))
        """
    )


def wait_for(predicate: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def takes_new_runs(repo: str) -> dict[str, Any]:
    """A fresh process opens the repository, lists it and writes a new run there; its summary."""
    return run_python(
        f"""
        import json, mltrack
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={repo!r})
        repo = mltrack.factory.experiment_repository()
        before = len(repo.list_experiments_sync())
        with mltrack.start_run("after-fault") as run:
            for step in range(100):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
        got = repo.get_experiment_sync(run.id)
        n = len(repo.get_experiment_metrics_sync(run.id).series("loss"))
        print(json.dumps(dict(listed=before, status=got.status.value, points=n)))
        """
    )
