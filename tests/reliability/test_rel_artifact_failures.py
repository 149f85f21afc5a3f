"""Issue 19 case 4: ``log_artifact`` never returns for an artifact that was not stored.

A name no file system can hold (200 characters of ``é``: 400 bytes, over the 255-byte limit
of a file name) is refused in the caller with :class:`InvalidNameError`, before any store
sees it; a name of exactly 255 bytes is stored. A store that fails to keep the file (a
folder in the name where a file of the run already is; a full disk) makes ``log_artifact``
raise :class:`ArtifactError`, and the run carries ``mltrack:artifact-not-stored``, shown by
``mltrack show``. Real Aim and MLflow stores in the test's folder, written through mltrack's
writer process.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mltrack
from mltrack.cli.app import main as mltrack_cli
from mltrack.config import configure_backend
from mltrack.errors import ArtifactError, InvalidNameError
from mltrack.factory import experiment_repository

from _reliability import record

NOT_STORED_TAG = "mltrack:artifact-not-stored"


def _configure(backend: str, request: pytest.FixtureRequest) -> Path:
    store: Path = request.getfixturevalue("aim_repo" if backend == "aim" else "mlflow_dir")
    configure_backend(backend, storage_path=str(store))
    return store


@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_artifact_names_too_long_for_a_file_fail_in_the_caller(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _configure(backend, request)
    source = tmp_path / "model.zip"
    source.write_bytes(b"weights" * 1000)
    too_long = "é" * 200  # 200 characters, 400 bytes
    at_limit = "é" * 127 + "a"  # 255 bytes
    with mltrack.start_run("artifact-names") as run:
        run.log_metric("loss", 0.5, step=1)  # the writer is up: what follows is the name check alone
        mltrack.factory.tracking_session().flush()
        started = time.perf_counter()
        with pytest.raises(InvalidNameError, match="400 bytes") as refused:
            run.log_artifact(source, "model", name=too_long)
        refused_after = time.perf_counter() - started
        stored = run.log_artifact(source, "model", name=at_limit)
        run.log_artifact(source, "model", name="weights")
        with pytest.raises(ArtifactError, match="not stored") as failed:
            run.log_artifact(source, "model", name="weights/best.zip")  # 'weights' is a file already
    listed = {
        a.name: Path(a.file_path).read_bytes() for a in experiment_repository().list_artifacts_sync(run.id)
    }
    summary = experiment_repository().get_experiment_sync(run.id)
    assert mltrack_cli(["show", run.id]) == 0
    shown = capsys.readouterr().out
    files_named_too_long = [p for p in store.rglob("*") if too_long in p.name]
    record(
        "artifact-not-stored",
        backend=backend,
        too_long_refused_in_ms=round(refused_after * 1000, 2),
        listed=sorted(len(n.encode()) for n in listed),
        failure=str(failed.value)[:120],
        status=summary.status.value,
        tagged=NOT_STORED_TAG in summary.tags,
    )
    assert "shorten it" in str(refused.value)
    assert refused_after < 0.5  # checked in the caller, not after a round trip to the store
    assert files_named_too_long == []
    assert stored.name == at_limit and listed == {
        at_limit: source.read_bytes(),
        "weights": source.read_bytes(),
    }
    assert "weights/best.zip" in str(failed.value) and backend in str(failed.value)
    assert NOT_STORED_TAG in summary.tags and NOT_STORED_TAG in shown


def _mount_small_disk(point: Path, size: str) -> None:
    point.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB file system of the test's own (a real ENOSPC when it fills up)."""
    point = tmp_path / "small"
    _mount_small_disk(point, "24m")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.mark.slow  # a store on a full disk retries each write: minutes, not seconds
@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_an_artifact_larger_than_the_free_space_raises(
    backend: str, small_disk: Path, tmp_path: Path, repo_template: Path, mlflow_db_template: Path
) -> None:
    store = small_disk / "store"
    if backend == "aim":
        shutil.copytree(repo_template, store)
    else:
        store.mkdir()
        shutil.copyfile(mlflow_db_template, store / mlflow_db_template.name)
    configure_backend(backend, storage_path=str(store))
    big = tmp_path / "checkpoint.pt"
    big.write_bytes(b"\1" * (32 << 20))  # 32 MB onto a 24 MB disk
    with mltrack.start_run("full-disk") as run:
        run.log_metric("loss", 0.5, step=1)
        with pytest.raises(ArtifactError, match="not stored") as failed:
            run.log_artifact(big, "checkpoint")
    listed = [a.name for a in experiment_repository().list_artifacts_sync(run.id)]
    summary = experiment_repository().get_experiment_sync(run.id)
    record(
        "artifact-disk-full",
        backend=backend,
        failure=str(failed.value)[:160],
        listed=listed,
        status=summary.status.value,
        tags=list(summary.tags),
    )
    assert "checkpoint.pt" not in listed
