"""Runs copied into TensorBoard event files (``mltrack copy --to tensorboard``) read back whole:
every field of the summary, every point with its time and context, every artifact; a second copy
adds nothing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import attrs

from mltrack.config import TrackingConfig
from mltrack.factory import build_session, open_repository
from mltrack.models import ArtifactType, ExperimentStatus
from mltrack.plugins import get_plugin_host
from mltrack.testing.memory import clear as clear_memory_store


def test_a_run_copied_into_tensorboard_reads_back_whole(tmp_path: Path, tb_dir: Path) -> None:
    store = f"tb-copy-{uuid.uuid4().hex}"
    source_config = TrackingConfig(backends=("memory",), backend_options={"memory": {"store": store}})
    host = get_plugin_host()
    session = build_session(source_config, lambda: host.activate(source_config), host)
    try:
        run = session.create_run(
            "copied",
            {"lr": 0.01, "net": {"layers": [8]}},
            name="origin",
            tags=["x", "y"],
            description="from memory",
        )
        for step in range(50):
            session.log_metric(run, "loss", 1.0 / (step + 1), step=step)
            session.log_metric(run, "acc", step / 50, step=step, context={"subset": "val", "fold": 1})
        artifact = tmp_path / "policy.zip"
        artifact.write_bytes(b"weights" * 100)
        session.log_artifact(run, artifact, ArtifactType.MODEL, metadata={"score": 0.5})
        session.finish_run(run, ExperimentStatus.INTERRUPTED, final_metrics={"win_rate": 0.25})
        session.flush()
        with (
            open_repository(source_config) as source,
            open_repository("tensorboard", logdir=str(tb_dir)) as target,
        ):
            first = source.copy_to_sync(target, [run.id])
            again = source.copy_to_sync(target, [run.id])
            want, got = source.get_experiment_sync(run.id), target.get_experiment_sync(run.id)
            want_series = source.get_experiment_metrics_sync(run.id).all_series
            got_series = target.get_experiment_metrics_sync(run.id).all_series
            (want_file,) = source.list_artifacts_sync(run.id)
            (got_file,) = target.list_artifacts_sync(run.id)
    finally:
        session.close()
        clear_memory_store(store)
    assert list(first.copied) == [run.id] and list(again.skipped) == [run.id]
    assert {**attrs.asdict(got), "tags": sorted(got.tags)} == {
        **attrs.asdict(want),
        "tags": sorted(want.tags),
    }

    def plain(series: list[Any]) -> list[Any]:
        return sorted(
            (s.name, sorted(s.context.items()), list(s.steps), list(s.values), list(s.timestamps))
            for s in series
        )

    assert plain(got_series) == plain(want_series)
    assert (got_file.name, got_file.artifact_type, got_file.metadata, got_file.sha256) == (
        want_file.name,
        want_file.artifact_type,
        want_file.metadata,
        want_file.sha256,
    )
    assert Path(got_file.file_path).read_bytes() == b"weights" * 100
