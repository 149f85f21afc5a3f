"""Issue 19 case 7: a read never answers "no points" for a run that has them; names are never blank.

A trainer logs 2,000 points into a store on a small tmpfs of the test's own and keeps its
run open; the file system is then filled to the last byte. Fresh readers must get either
every point or a typed error (:class:`mltrack.errors.MLTrackError`) saying why, never an
empty or shortened history; once space is freed the same read returns every point. The
same holds for a finished run. An experiment named ``"   "`` is refused before anything is
written. Real Aim and MLflow stores (root only, for the mount; otherwise the tests skip).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mltrack
from mltrack.config import configure_backend
from mltrack.errors import InvalidNameError
from mltrack.factory import experiment_repository, open_repository

from _reliability import child_env, record, run_python

POINTS = 2000
READS = 4


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MB tmpfs of the test's own, unmounted afterwards."""
    point = tmp_path / "disk"
    point.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(point)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def _new_store(backend: str, disk: Path, repo_template: Path, mlflow_db_template: Path) -> Path:
    store = disk / "store"
    if backend == "aim":
        shutil.copytree(repo_template, store)
    else:
        store.mkdir()
        shutil.copyfile(mlflow_db_template, store / mlflow_db_template.name)
    return store


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the file to delete to free it."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as fh:
        for block in (1 << 16, 512, 1):
            try:
                while True:
                    fh.write(b"\0" * block)
            except OSError:  # ENOSPC
                pass
    return filler


def _read_in_fresh_processes(backend: str, store: Path, run_id: str) -> list[Any]:
    """``READS`` reads of the run's history, each through a newly opened repository, in a new process."""
    result: list[Any] = run_python(
        f"""
        import json, mltrack
        from mltrack.factory import open_repository
        out = []
        for _ in range({READS}):
            try:
                with open_repository({backend!r}, storage_path={str(store)!r}, must_exist=True) as repo:
                    history = repo.get_experiment_metrics_sync({run_id!r})
                out.append(sum(len(s) for s in history.all_series))
            except mltrack.MLTrackError as exc:
                out.append(type(exc).__name__)
        print(json.dumps(out))
        """
    )
    return result


def _points_now(backend: str, store: Path, run_id: str) -> int:
    with open_repository(backend, storage_path=str(store), must_exist=True) as repo:
        return sum(len(s) for s in repo.get_experiment_metrics_sync(run_id).all_series)


@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_reads_on_a_full_disk_return_every_point_or_a_typed_error(
    backend: str, small_disk: Path, repo_template: Path, mlflow_db_template: Path
) -> None:
    store = _new_store(backend, small_disk, repo_template, mlflow_db_template)
    env = child_env({"ML_TRACKING_BACKEND": backend, "ML_STORAGE_PATH": str(store)})
    code = f"""
import sys, mltrack, mltrack.factory
with mltrack.start_run("full-disk-reads") as run:
    for step in range({POINTS}):
        run.log_metric("loss", 1.0 / (step + 1), step=step)
    mltrack.factory.tracking_session().flush()
    print(run.id, flush=True)
    sys.stdin.readline()  # the run stays open (RUNNING) until the test says so
"""
    with (small_disk.parent / "trainer.log").open("w") as log:
        trainer = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
        )
    assert trainer.stdin is not None and trainer.stdout is not None
    filler: Path | None = None
    try:
        run_id = trainer.stdout.readline().strip()
        assert run_id, "the trainer did not start"
        filler = _fill(small_disk)
        running = _read_in_fresh_processes(backend, store, run_id)
        filler.unlink()
        freed = _points_now(backend, store, run_id)
        trainer.stdin.write("finish\n")
        trainer.stdin.flush()
        trainer.communicate(timeout=180)
        filler = _fill(small_disk)
        finished = _read_in_fresh_processes(backend, store, run_id)
    finally:
        if filler is not None and filler.exists():
            filler.unlink()
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(30)
    record(
        "reads-on-full-disk",
        backend=backend,
        running_run=json.dumps(running),
        after_freeing=freed,
        finished_run=json.dumps(finished),
    )
    for answer in running + finished:
        assert answer == POINTS or isinstance(answer, str), f"a read returned {answer} of {POINTS} points"
    assert freed == POINTS


@pytest.mark.parametrize("backend", ["aim", "mlflow"])
@pytest.mark.parametrize("name", ["   ", " "], ids=["three-spaces", "one-space"])
def test_a_blank_experiment_name_is_refused_before_anything_is_stored(
    backend: str, name: str, request: pytest.FixtureRequest
) -> None:
    store: Path = request.getfixturevalue("aim_repo" if backend == "aim" else "mlflow_dir")
    configure_backend(backend, storage_path=str(store))
    with pytest.raises(InvalidNameError, match="blank") as refused:
        mltrack.start_run(name)
    with mltrack.start_run("visible") as run:
        pass
    listed = [r.experiment_name for r in experiment_repository().list_experiments_sync()]
    record("blank-experiment-name", backend=backend, name=repr(name), error=str(refused.value), runs=listed)
    assert listed == ["visible"] and run.id
