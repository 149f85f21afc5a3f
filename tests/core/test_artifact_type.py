"""An artifact type that does not exist: the error lists the ones that do."""

from __future__ import annotations

from pathlib import Path

import pytest

import mltrack
from mltrack import ArtifactType, ValidationError


@pytest.mark.usefixtures("use_memory")
def test_an_unknown_artifact_type_lists_the_valid_ones(tmp_path: Path) -> None:
    model = tmp_path / "model.zip"
    model.write_bytes(b"weights")
    with mltrack.start_run("artifact-types") as run, pytest.raises(ValidationError) as raised:
        run.log_artifact(model, "modle")
    message = str(raised.value)
    assert "'modle'" in message
    assert all(t.value in message for t in ArtifactType)


@pytest.mark.usefixtures("use_memory")
def test_an_unknown_artifact_type_stores_nothing(tmp_path: Path) -> None:
    model = tmp_path / "model.zip"
    model.write_bytes(b"weights")
    with mltrack.start_run("artifact-types") as run:
        with pytest.raises(ValidationError):
            run.log_artifact(model, "modle")
    repo = mltrack.factory.experiment_repository()
    assert repo.list_artifacts_sync(run.id) == []
