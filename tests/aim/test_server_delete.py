"""A run deleted through an ``aim server`` is gone at once for every read, with no error."""

from __future__ import annotations

from pathlib import Path

import pytest

import mltrack
from mltrack import factory
from mltrack.errors import RunNotFoundError
from mltrack_aim import AimProcess


def test_listing_right_after_a_delete_on_a_server_leaves_the_run_out(
    aim_server: AimProcess, tmp_path: Path
) -> None:
    # The server caches its run listing for 0.5 s; a delete and a listing within that window
    # used to fail with Aim's unserialisable error reply instead of leaving the run out.
    mltrack.configure_backend("aim", repo_path=aim_server.address, artifacts_dir=str(tmp_path))
    repo = factory.experiment_repository()
    kept = []
    for i in range(3):
        with mltrack.start_run("server-delete", {"i": i}) as keep:
            keep.log_metric("loss", 1.0, step=0)
        with mltrack.start_run("server-delete", {"i": i}) as gone:
            gone.log_metric("loss", 1.0, step=0)
        kept.append(keep.id)
        repo.delete_experiment_sync(gone.id)
        listed = [s.experiment_id for s in repo.list_experiments_sync()]
        assert gone.id not in listed
        assert set(kept) <= set(listed)
        with pytest.raises(RunNotFoundError):
            repo.get_experiment_sync(gone.id)
