"""The local spool: records survive torn tails and bad checksums, the file is bounded, recovery delivers once."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from array import array
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

import mltrack
from mltrack import factory
from mltrack.cli.app import cli
from mltrack.config import TrackingConfig
from mltrack.models import ExperimentRun, ExperimentStatus, MetricBatch
from mltrack.spool import (
    AckingSink,
    AckLog,
    Spool,
    encode_record,
    pending_spools,
    read_records,
    recover,
)
from mltrack.writer import HookSink, Op, Writer, WriterStats


def _batch(run_id: str, start: int, n: int) -> Op:
    batch = MetricBatch(
        [("loss", ())],
        array("I", [0] * n),
        array("q", range(start, start + n)),
        array("d", (float(s) for s in range(start, start + n))),
        array("d", [time.time()] * n),
    )
    return Op("mltrack_log_metrics", {"run_id": run_id, "batch": batch}, n)


def _memory(tmp_path: Path) -> TrackingConfig:
    return TrackingConfig(
        backends=("memory",), backend_options={"memory": {"store": str(tmp_path / "store")}}
    )


def _stored_steps(config: TrackingConfig, run_id: str) -> tuple[str, list[int]]:
    repo = mltrack.open_repository(config, must_exist=True)
    try:
        run = repo.get_experiment_sync(run_id)
        steps = [int(s) for s in repo.get_experiment_metrics_sync(run_id).series("loss").steps]
        return run.status.value, steps
    finally:
        repo.close()


def test_a_torn_tail_and_a_bad_checksum_end_the_file_for_a_reader(tmp_path: Path) -> None:
    path = tmp_path / "x.spool"
    records = [{"header": 1}, (1, "a"), (2, "b" * 100), (3, "c")]
    path.write_bytes(b"".join(encode_record(r) for r in records))
    assert read_records(path) == (records, 0)

    whole = path.read_bytes()
    path.write_bytes(whole[:-3])  # killed while appending the last record
    got, torn = read_records(path)
    assert got == records[:3] and torn > 0

    damaged = bytearray(whole)
    third = len(encode_record(records[0])) + len(encode_record(records[1]))
    damaged[third + 20] ^= 0xFF  # a flipped byte inside record 2's payload
    path.write_bytes(bytes(damaged))
    got, torn = read_records(path)
    assert got == records[:2]  # record 2 and what follows cannot be trusted
    assert torn == len(whole) - third


def test_recovery_delivers_only_what_was_not_acknowledged_and_marks_the_run_crashed(tmp_path: Path) -> None:
    config = _memory(tmp_path)
    spool = Spool(tmp_path / "spool", config, max_bytes=10**9)
    run = ExperimentRun(id="r1", experiment_name="e", config={})
    ops = [Op("mltrack_create_run", {"run": run}), _batch("r1", 0, 100), _batch("r1", 100, 100)]
    spool.append([(i + 1, op) for i, op in enumerate(ops)])
    # A store took the create and the first batch, then trainer and writer were killed.
    backends = mltrack.plugins.get_plugin_host().activate(config)
    for op in ops[:2]:
        backends.backend_targets[0].call(op.hook, **op.kwargs)
    backends.close()
    acks = AckLog(spool.path)
    acks.add((1, 2))
    acks.close()
    with open(spool.path, "ab") as fh:
        fh.write(encode_record((4, _batch("r1", 200, 5)))[:-2])  # torn by the kill
    assert [s.owner_alive for s in pending_spools(spool.path.parent)] == [True]
    with pytest.raises(RuntimeError, match="still running"):
        recover(spool.path)
    os.close(spool._fd)  # the owner dies (its lock goes with it)
    os.close(spool._lock_fd)  # type: ignore[arg-type]

    [pending] = pending_spools(spool.path.parent)
    assert (pending.owner_alive, pending.operations, pending.points, pending.open_runs) == (
        False,
        1,
        100,
        ("r1",),
    )
    assert recover(spool.path) == (1, 100, ["r1"])
    assert _stored_steps(config, "r1") == ("crashed", list(range(200)))
    assert not list(spool.path.parent.iterdir())  # delivered: the files are gone


def test_recovery_waits_for_a_lock_another_process_holds_a_moment(tmp_path: Path) -> None:
    """A writer whose trainer died recovers the spool while, say, a reader scans it (seen in CI:
    the scan's lock made the writer give up, and the run never got its CRASHED exit)."""
    config = _memory(tmp_path)
    spool = Spool(tmp_path / "spool", config, max_bytes=10**9)
    run = ExperimentRun(id="r1", experiment_name="e", config={})
    spool.append([(1, Op("mltrack_create_run", {"run": run})), (2, _batch("r1", 0, 10))])
    os.close(spool._fd)  # the trainer dies
    os.close(spool._lock_fd)  # type: ignore[arg-type]
    scanner = os.open(spool.lock_path, os.O_RDWR)
    fcntl.flock(scanner, fcntl.LOCK_EX)  # another process's scan, caught mid-probe
    with pytest.raises(RuntimeError, match="still running"):
        recover(spool.path)
    threading.Timer(0.3, os.close, (scanner,)).start()
    assert recover(spool.path, wait=10) == (2, 10, ["r1"])
    assert _stored_steps(config, "r1") == ("crashed", list(range(10)))


def test_a_resumed_run_whose_trainer_dies_is_delivered_and_marked_crashed(tmp_path: Path) -> None:
    config = _memory(tmp_path)
    backends = mltrack.plugins.get_plugin_host().activate(config)
    store = backends.backend_targets[0]
    store.call("mltrack_create_run", run=ExperimentRun(id="r1", experiment_name="e", config={}))
    store.call("mltrack_log_metrics", **_batch("r1", 0, 50).kwargs)
    store.call(
        "mltrack_finish_run",
        run_id="r1",
        status=ExperimentStatus.CRASHED,
        end_time=datetime.now(timezone.utc),
        final_metrics={"loss": 49.0},
    )
    backends.close()
    # A later trainer resumes r1, logs 50 more steps and is killed with its writer before any is stored.
    spool = Spool(tmp_path / "spool", config, max_bytes=10**9)
    spool.append([(1, Op("mltrack_resume_run", {"run_id": "r1"})), (2, _batch("r1", 50, 50))])
    os.close(spool._fd)
    os.close(spool._lock_fd)  # type: ignore[arg-type]

    [pending] = pending_spools(spool.path.parent)
    assert (pending.operations, pending.points, pending.open_runs) == (2, 50, ("r1",))
    assert recover(spool.path) == (2, 50, ["r1"])
    assert _stored_steps(config, "r1") == ("crashed", list(range(100)))


def test_past_the_bound_unacknowledged_points_are_counted_and_acknowledged_ones_compacted(
    tmp_path: Path,
) -> None:
    config = _memory(tmp_path)
    spool = Spool(tmp_path / "spool", config, max_bytes=40_000)
    run = ExperimentRun(id="r1", experiment_name="e", config={})
    spool.append([(1, Op("mltrack_create_run", {"run": run}))])
    seq = 1
    for i in range(10):  # ~1,000 points of ~28 bytes: about 30 kB
        seq += 1
        spool.append([(seq, _batch("r1", i * 100, 100))])
    assert spool.points_not_spooled == 0
    seq += 1
    spool.append([(seq, _batch("r1", 1000, 500))])  # does not fit, and nothing is stored yet
    assert spool.points_not_spooled == 500
    assert spool.pending() == (11, 1000)

    acks = AckLog(spool.path)
    acks.add(list(range(1, seq)))
    seq += 1
    spool.append([(seq, _batch("r1", 1500, 100))], lambda: {"r1": {"loss": 1599.0}})
    assert spool.points_not_spooled == 500  # fits: appended
    acks.add((seq,))
    seq += 1
    spool.append([(seq, _batch("r1", 1600, 500))], lambda: {"r1": {"loss": 2099.0}})
    assert spool.points_not_spooled == 500  # did not fit, but everything before it is stored
    assert spool.path.stat().st_size < 20_000  # rewritten: header, open runs, the new batch
    records, torn = read_records(spool.path)
    assert torn == 0 and records[1][0] == "state" and records[1][2] == {"r1": {"loss": 2099.0}}
    assert [r[0] for r in records[2:]] == [seq]
    assert spool.pending() == (1, 500)
    acks.close()
    spool.close()  # not everything stored: kept for recovery
    assert spool.path.exists()


class _Disk:
    """The memory store behind a disk that can be full (writes of points then fail with ENOSPC)."""

    name = "memory"
    is_backend = True

    def __init__(self, config: TrackingConfig) -> None:
        self.backends = mltrack.plugins.get_plugin_host().activate(config)
        self.full = False

    def call(self, hook: str, **kwargs: object) -> None:
        if self.full:
            raise OSError(28, "No space left on device")
        self.backends.backend_targets[0].call(hook, **kwargs)


def _spooled_writer(tmp_path: Path, disk: _Disk) -> tuple[Writer, Spool, WriterStats]:
    spool = Spool(tmp_path / "spool", _memory(tmp_path), max_bytes=10**9)
    stats = WriterStats()
    hooks = HookSink([disk], stats, max_retries=1, backoff=0.001)
    sink = AckingSink(hooks, AckLog(spool.path), spool_path=spool.path, stats=stats, retry_every=0.2)
    return Writer(sink, stats=stats, flush_interval=0.02, batch_size=100, spool=spool), spool, stats


def _log_through_a_full_disk(writer: Writer, disk: _Disk) -> float:
    """Create r1, log steps 0-999 (the disk fills at step 500), finish; seconds the finish took."""
    writer.submit("mltrack_create_run", run=ExperimentRun(id="r1", experiment_name="e", config={}))
    for step in range(1000):
        if step == 500:
            writer.flush()
            disk.full = True
        writer.log_point("r1", "loss", float(step), step, (), time.time())
    started = time.monotonic()
    writer.submit(
        "mltrack_finish_run",
        run_id="r1",
        status=ExperimentStatus.COMPLETED,
        end_time=datetime.now(timezone.utc),
        final_metrics={"loss": 999.0},
        wait=True,
    )
    return time.monotonic() - started


def test_points_a_full_store_refuses_wait_in_the_spool_and_arrive_once_space_returns(tmp_path: Path) -> None:
    disk = _Disk(_memory(tmp_path))
    writer, spool, stats = _spooled_writer(tmp_path, disk)
    took = _log_through_a_full_disk(writer, disk)
    assert took < 2  # finishing does not wait for a full disk
    assert spool.pending() == (6, 500)  # five batches and the finish wait, in order
    assert (stats.points_waiting, stats.points_undelivered) == (500, 0)
    assert _stored_steps(_memory(tmp_path), "r1") == ("running", list(range(500)))

    disk.full = False  # space is back: the writer delivers in the background
    deadline = time.monotonic() + 10
    while spool.pending() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert spool.pending() == (0, 0)
    assert (stats.points_waiting, stats.points_undelivered, stats.points_delivered) == (0, 0, 1000)
    writer.close()
    disk.backends.close()
    assert not spool.path.exists()  # everything stored: the spool is gone
    assert _stored_steps(_memory(tmp_path), "r1") == ("completed", list(range(1000)))
    repo = mltrack.open_repository(_memory(tmp_path))
    assert not [t for t in repo.get_experiment_sync("r1").tags if t.startswith("mltrack:")]
    repo.close()


def test_points_still_refused_when_the_session_ends_are_delivered_by_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _Disk(_memory(tmp_path))
    writer, spool, stats = _spooled_writer(tmp_path, disk)
    _log_through_a_full_disk(writer, disk)
    writer.close()  # still full: what waits stays in the spool
    disk.backends.close()
    assert spool.path.exists() and stats.points_waiting == 500
    # `mltrack show` says what the store does not hold yet (the store cannot: its disk is full).
    monkeypatch.setenv("MLTRACK_SPOOL_DIR", str(spool.path.parent))
    mltrack.configure_backend("memory", store=str(tmp_path / "store"))
    shown = CliRunner().invoke(cli, ["show", "r1"])
    assert shown.exit_code == 0, shown.output
    assert f"waiting: 500 point(s) of this run in the local spool {spool.path}" in " ".join(
        shown.output.split()
    )
    as_json = CliRunner().invoke(cli, ["show", "r1", "--json"])
    assert json.loads(as_json.output)["points_waiting"] == {str(spool.path): 500}
    assert recover(spool.path) == (6, 500, [])  # space is back
    assert _stored_steps(_memory(tmp_path), "r1") == ("completed", list(range(1000)))
    repo = mltrack.open_repository(_memory(tmp_path))
    tags = set(repo.get_experiment_sync("r1").tags)
    repo.close()
    assert "mltrack:spool-delivered-points=500" in tags
    assert not [t for t in tags if t.startswith("mltrack:undelivered")]
    assert "waiting" not in CliRunner().invoke(cli, ["show", "r1"]).output  # all delivered now


def test_offline_then_mltrack_sync_stores_the_same_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_dir = tmp_path / "spool"
    monkeypatch.setenv("MLTRACK_SPOOL_DIR", str(spool_dir))
    monkeypatch.setenv("MLTRACK_OFFLINE", "1")
    mltrack.configure_backend("memory", store=str(tmp_path / "store"))
    try:
        with mltrack.start_run("offline", {"lr": 0.1}) as run:
            for step in range(2000):
                run.log_metric("loss", 1.0 / (step + 1), step=step)
        factory.reset()
        assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())
        listed = CliRunner().invoke(cli, ["sync", "--list"])
        assert listed.exit_code == 0 and "points=2000" in listed.output, listed.output
        synced = CliRunner().invoke(cli, ["sync"])
        assert synced.exit_code == 0, synced.output
        assert "delivered" in synced.output
    finally:
        monkeypatch.delenv("MLTRACK_OFFLINE")
        factory.reset()
    status, steps = _stored_steps(_memory(tmp_path), run.id)
    assert status == "completed" and steps == list(range(2000))
    assert not list(spool_dir.glob("*.spool"))
