"""A resumed W&B run is written as W&B writes one offline: a second run folder with the same id.

W&B's own tools see two folders (the second one's run record marked ``resumed``); mltrack's
reads merge them into one run.
"""

from __future__ import annotations

from pathlib import Path

from mltrack.config import TrackingConfig
from mltrack.models import ExperimentStatus
from mltrack.testing.conformance import Harness
from mltrack_wandb import records
from mltrack_wandb.runlog import pb, read_run


def _resumed_flags(folder: Path) -> list[bool]:
    """The ``resumed`` flag of every run record in a folder's log, read with W&B's protobufs."""
    (log,) = folder.glob("run-*.wandb")
    flags = []
    for raw, _ in records.decode(log.read_bytes()):
        if records.history_num(raw) is None:
            rec = pb.Record.FromString(raw)
            if rec.WhichOneof("record_type") == "run":
                flags.append(rec.run.resumed)
    return flags


def test_resume_writes_a_second_folder_and_reads_merge_them(wandb_root: Path) -> None:
    config = TrackingConfig(backends=("wandb",), storage_path=str(wandb_root), strict=True, writer="thread")
    harness = Harness(config)
    try:
        s = harness.session
        run = s.create_run("wandb-resume", {"lr": 0.1})
        for step in range(3):
            s.log_metric(run, "loss", float(step))
        s.finish_run(run, ExperimentStatus.CRASHED)
        again = s.create_run(resume=run.id, config={"seed": 1})
        for _ in range(2):
            s.log_metric(again, "loss", 9.0)
        s.finish_run(again)

        folders = sorted((wandb_root / "wandb").glob(f"offline-run-*-{run.id}"))
        assert len(folders) == 2
        first, second = (read_run(f) for f in folders)
        assert first is not None and second is not None
        assert first.exit_code == 137 and second.exit_code == 0  # crashed, then completed
        assert _resumed_flags(folders[0]) == [False]
        assert _resumed_flags(folders[1])[0] is True
        assert sorted(first.history["loss"][0]) == [0, 1, 2]
        assert sorted(second.history["loss"][0]) == [3, 4]

        (listed,) = [r for r in harness.repo.list_experiments_sync() if r.experiment_id == run.id]
        assert listed.status is ExperimentStatus.COMPLETED and listed.resumed == 1
        assert listed.config == {"lr": 0.1, "seed": 1}
        assert abs((listed.start_time - run.start_time).total_seconds()) < 1
        loss = harness.repo.get_experiment_metrics_sync(run.id).series("loss")
        assert list(zip(loss.steps, loss.values)) == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 9.0), (4, 9.0)]
        harness.repo.delete_experiment_sync(run.id)
        assert list((wandb_root / "wandb").glob(f"*{run.id}")) == []
    finally:
        harness.close()
