"""Case 5, storage faults: the repository sits on a read-only or a full filesystem.

A real tmpfs is mounted under the test's folder (root only; otherwise the tests skip): for
"read-only" it holds a valid repository and is remounted read-only; for "full" it is a few
hundred KB filled to the last byte. The user must get a clear typed error at ``create_run``
or from ``health_check()``, training must not crash, and no half-written run may be left
that breaks readers once the storage is fixed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mltrack
from mltrack_aim import configure_aim_backend

from _reliability import record, takes_new_runs

POINTS = 2000


def _mount(point: Path, options: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")


def _remount(point: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(point)], check=True)


@pytest.fixture(params=["read-only", "full"])
def faulty_repo(
    request: pytest.FixtureRequest, tmp_path: Path, repo_template: Path
) -> Iterator[tuple[str, Path]]:
    """A repository on a read-only or a full tmpfs; made writable again (``fix``) after the test."""
    point = tmp_path / "mnt"
    _mount(point, "size=4m")
    repo = point / "aim_logs"
    shutil.copytree(repo_template, repo)
    if request.param == "read-only":
        _remount(point, "ro")
    else:
        with (point / "filler").open("wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:  # ENOSPC: the filesystem is full
                pass
    try:
        yield request.param, repo
    finally:
        mltrack.factory.reset()
        subprocess.run(["umount", "-l", str(point)], check=False)


def _fix(kind: str, repo: Path) -> None:
    """What the user does once told: make the filesystem writable, or free space."""
    point = repo.parent
    if kind == "read-only":
        _remount(point, "rw")
    else:
        (point / "filler").unlink()


def _train(repo: Path) -> dict[str, Any]:
    """A training loop on the faulty repository; returns what happened to it."""
    configure_aim_backend(repo_path=repo)
    outcome: dict[str, Any] = {"create_error": None, "crashed": None}
    started = time.monotonic()
    try:
        run = mltrack.start_run("storage-fault")
    except mltrack.MLTrackError as exc:
        outcome["create_error"] = f"{type(exc).__name__}: {exc}"
        return outcome
    try:
        for step in range(POINTS):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
        run.finish()
    except Exception as exc:  # training crashed because of the store
        outcome["crashed"] = f"{type(exc).__name__}: {exc}"
    outcome["train_s"] = round(time.monotonic() - started, 2)
    health = mltrack.factory.health_sync()
    outcome["healthy"] = health.is_healthy
    outcome["issues"] = list(health.issues)
    outcome["undelivered"] = health.details.get("writer", {}).get("points_undelivered")
    return outcome


def test_training_survives_and_health_check_reports_the_fault(faulty_repo: tuple[str, Path]) -> None:
    """Training is not crashed; health_check() is unhealthy and counts every point not stored."""
    kind, repo = faulty_repo
    out = _train(repo)
    record("storage-fault", kind=kind, points_logged=POINTS, **out)
    assert out["crashed"] is None, out
    if out["create_error"] is None:
        assert not out["healthy"], out
        assert out["undelivered"] == POINTS, out
    _fix(kind, repo)
    mltrack.factory.reset()
    after = takes_new_runs(str(repo))
    record("storage-fault-after-fix", kind=kind, new_run=after)
    assert after["status"] == "completed" and after["points"] == 100


def test_create_run_raises_a_typed_error(faulty_repo: tuple[str, Path]) -> None:
    """start_run on a read-only or full repository raises BackendError saying what to fix."""
    _kind, repo = faulty_repo
    configure_aim_backend(repo_path=repo)
    with pytest.raises(mltrack.BackendError, match=r"space|writable|read-only|Read-only"):
        mltrack.start_run("storage-fault")


def test_health_check_names_the_fault(faulty_repo: tuple[str, Path], request: pytest.FixtureRequest) -> None:
    """Before any run, health_check() is unhealthy and says the repository is not writable or full."""
    kind, repo = faulty_repo
    configure_aim_backend(repo_path=repo)
    health = mltrack.factory.health_sync()
    record("storage-health", kind=kind, healthy=health.is_healthy, issues=list(health.issues))
    assert not health.is_healthy
    assert any(str(repo) in i for i in health.issues), health.issues
