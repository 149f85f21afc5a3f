"""The local spool on real stores: a kill of trainer and writer together, and offline runs, lose nothing.

Slurm's ``scancel``, a container OOM kill and ``systemd`` stop kill the whole cgroup: trainer
and writer process die together, and whatever the writer process held in memory with them
(on MLflow's SQLite store, slower than the training loop: up to 176,134 of 1.33 M returned
points, issue 17). Every operation is now spooled to local disk before any store sees it;
the next mltrack process (in the background) or ``mltrack sync`` delivers what no store
acknowledged and marks the run CRASHED. Here both processes are frozen (SIGSTOP) and then
SIGKILLed, the way a cgroup kill lands: neither can react to the other's death.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from _child import wait_for_writer
from _reliability import child_env, record, repetitions, run_python

WINDOW = 0.1
"""The flush interval: points returned this long before the kill may be lost, no older ones."""

TRAINER = """
import time, mltrack
run = mltrack.start_run("group-kill", {{"lr": 0.001}})
print("run", run.id, flush=True)
step = 0
while True:
    run.log_metric("loss", 1.0 / (step + 1), step=step)
    step += 1
    if step % 100 == 0:
        print(step - 1, time.time(), flush=True)  # every step up to here returned by now
        if {pause}:
            time.sleep({pause})
"""

READER = """
import json, mltrack
repo = mltrack.open_repository({backend!r}, storage_path={store!r}, must_exist=True)
run = repo.get_experiment_sync({run_id!r})
history = repo.get_experiment_metrics_sync({run_id!r})
steps = [int(s) for s in history.series("loss").steps] if "loss" in history else []
print(json.dumps(dict(status=run.status.value, steps=steps, tags=list(run.tags), final=run.final_metrics)))
"""


def _env(backend: str, store: Path, spool: Path, **extra: str) -> dict[str, str]:
    return child_env(
        {
            "ML_TRACKING_BACKEND": backend,
            "ML_STORAGE_PATH": str(store),
            "MLTRACK_WRITER": "process",
            "MLTRACK_SPOOL_DIR": str(spool),
            **extra,
        }
    )


def _group_kill(backend: str, store: Path, spool: Path, seconds: float, pause: float) -> dict[str, Any]:
    """Run a trainer, then freeze and SIGKILL it and its writer process at once; what did it return?"""
    trainer = subprocess.Popen(
        [sys.executable, "-u", "-c", TRAINER.format(pause=pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(backend, store, spool),
        start_new_session=True,  # its own process group, as a job step's
    )
    try:
        assert trainer.stdout is not None and trainer.stderr is not None
        first = trainer.stdout.readline().split()
        assert first[:1] == ["run"], [*first, trainer.stderr.read()]
        writer = wait_for_writer(trainer.pid)
        returned: list[tuple[int, float]] = []
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            line = trainer.stdout.readline()
            assert line, trainer.stderr.read()
            step, at = line.split()
            returned.append((int(step), float(at)))
        # The cgroup dies at once: neither process sees the other go.
        os.killpg(trainer.pid, signal.SIGSTOP)
        os.kill(writer, signal.SIGSTOP)
        killed_at = time.time()
        os.killpg(trainer.pid, signal.SIGKILL)
        os.kill(writer, signal.SIGKILL)
        trainer.wait(10)
        for line in trainer.stdout:
            fields = line.split()
            if len(fields) == 2 and line.endswith("\n"):
                returned.append((int(fields[0]), float(fields[1])))
    finally:
        if trainer.poll() is None:
            trainer.kill()
    required = max((s for s, at in returned if at < killed_at - WINDOW), default=-1) + 1
    return {"run_id": first[1], "returned": returned[-1][0] + 1 if returned else 0, "required": required}


def _sync(spool: Path, *args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "mltrack", "sync", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=child_env({"MLTRACK_SPOOL_DIR": str(spool)}),
    )
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def _next_process_recovers(backend: str, store: Path, spool: Path, timeout: float = 300) -> float:
    """A later trainer starts a run; its background recovery empties the spool. Seconds taken."""
    started = time.monotonic()
    run_python(
        """
        import json, mltrack
        with mltrack.start_run("next") as run:
            run.log_metric("loss", 1.0, step=0)
        print(json.dumps(run.id))
        """,
        env=_env(backend, store, spool),
    )
    deadline = time.monotonic() + timeout
    while list(spool.glob("*.spool")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not list(spool.glob("*.spool")), "the next process did not deliver the spool"
    return time.monotonic() - started


def _check(backend: str, store: Path, killed: dict[str, Any], case: str, **numbers: Any) -> dict[str, Any]:
    read = run_python(READER.format(backend=backend, store=str(store), run_id=killed["run_id"]))
    steps = read["steps"]
    lost = max(0, killed["required"] - len(set(steps) & set(range(killed["required"]))))
    result = record(
        case,
        returned=killed["returned"],
        required=killed["required"],
        stored=len(steps),
        lost_older_than_window=lost,
        status=read["status"],
        **numbers,
    )
    assert lost == 0, result
    assert steps == list(range(len(steps))), "a gap or a duplicate in the stored history"
    assert read["status"] == "crashed", result
    assert read["final"].get("loss") == pytest.approx(1.0 / len(steps)), result  # the last value stored
    return result


@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_trainer_and_writer_killed_together_lose_nothing_older_than_the_flush_interval(
    backend: str, tmp_path: Path
) -> None:
    store, spool = tmp_path / "store", tmp_path / "spool"
    # Paced, so MLflow's backlog (what the kill used to lose) stays a few seconds' worth in CI.
    killed = _group_kill(backend, store, spool, seconds=2.0, pause=0.002)
    assert list(spool.glob("*.spool")), "nothing was left to recover"
    if backend == "mlflow":
        code, out, took = _sync(spool)
        assert code == 0 and "delivered" in out, out
    else:
        took = _next_process_recovers(backend, store, spool)
    _check(backend, store, killed, f"group SIGKILL ({backend})", recovery_s=round(took, 1))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_trainer_and_writer_killed_together_ten_times_at_full_speed(backend: str, tmp_path: Path) -> None:
    rng = random.Random(17)
    kills = repetitions("MLTRACK_REL_GROUP_KILLS", 10)
    totals = {"returned": 0, "required": 0}
    for i in range(kills):
        store, spool = tmp_path / f"store{i}", tmp_path / f"spool{i}"
        killed = _group_kill(backend, store, spool, seconds=rng.uniform(3.0, 8.0), pause=0)
        if i % 2:
            took = _next_process_recovers(backend, store, spool, timeout=900)
        else:
            code, out, took = _sync(spool)
            assert code == 0, out
        _check(
            backend, store, killed, f"group SIGKILL {i + 1}/{kills} ({backend})", recovery_s=round(took, 1)
        )
        totals["returned"] += killed["returned"]
        totals["required"] += killed["required"]
    record(f"group SIGKILL x{kills} ({backend})", **totals, lost_older_than_window=0)


OFFLINE = """
import json, mltrack
with mltrack.start_run("offline", {"lr": 0.01}, tags=["offline"]) as run:
    for step in range(3000):
        run.log_metrics({"loss": 1.0 / (step + 1), "acc": step / 3000}, step=step)
        if step % 1000 == 0:
            run.log_metric("val", float(step), step=step, context={"subset": "val"})
print(json.dumps(run.id))
"""

HISTORY = """
import json, mltrack
repo = mltrack.open_repository({backend!r}, storage_path={store!r}, must_exist=True)
run = repo.get_experiment_sync({run_id!r})
h = repo.get_experiment_metrics_sync({run_id!r})
print(json.dumps(dict(status=run.status.value, config=run.config, tags=sorted(run.tags),
    series={{k: [list(map(float, h.series(k).steps)), list(h.series(k).values)] for k in ("loss", "acc")}})))
"""


@pytest.mark.parametrize("backend", ["aim", pytest.param("mlflow", marks=pytest.mark.slow)])
def test_offline_run_then_mltrack_sync_stores_the_same_history(backend: str, tmp_path: Path) -> None:
    store, spool = tmp_path / "store", tmp_path / "spool"
    started = time.monotonic()
    run_id = run_python(OFFLINE, env=_env(backend, store, spool, MLTRACK_OFFLINE="1"))
    offline_s = time.monotonic() - started
    assert not store.exists(), "offline wrote to the store"
    code, listed, _ = _sync(spool, "--list")
    assert code == 0 and "points=6003" in listed and "pending" in listed, listed
    code, out, took = _sync(spool)
    assert code == 0 and "delivered" in out, out
    got = run_python(HISTORY.format(backend=backend, store=str(store), run_id=run_id))
    record(
        f"offline then sync ({backend})", points=6003, offline_s=round(offline_s, 1), sync_s=round(took, 1)
    )
    steps = [float(s) for s in range(3000)]
    assert got["series"] == {  # what the training loop logged, as an online run stores it
        "loss": [steps, [1.0 / (s + 1) for s in range(3000)]],
        "acc": [steps, [s / 3000 for s in range(3000)]],
    }
    assert got["status"] == "completed"
    assert got["config"] == {"lr": 0.01} and got["tags"] == ["offline"]
    assert not list(spool.glob("*.spool"))
