"""A write an ``aim server`` refuses is a typed error on the next write, never a hung queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack.config import BackendConfig
from mltrack.errors import BackendError
from mltrack.models import ExperimentRun, MetricBatch
from mltrack_aim import AimProcess
from mltrack_aim.backend import AimBackend


def _batch(steps: list[int]) -> MetricBatch:
    return MetricBatch(
        keys=[("loss", ())],
        key_index=[0] * len(steps),
        steps=steps,
        values=[float(s) for s in steps],
        timestamps=[time.time()] * len(steps),
    )


def _log_within(backend: AimBackend, run_id: str, steps: list[int], seconds: float) -> BaseException | None:
    """Log ``steps``; the error it raised, or an AssertionError if it had not returned in time."""
    outcome: list[BaseException | None] = []

    def log() -> None:
        try:
            backend.mltrack_log_metrics(run_id, _batch(steps))
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=log, daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise AssertionError(f"logging steps {steps} hung for {seconds:.0f} s")
    return outcome[0]


@pytest.fixture
def backend(aim_server: AimProcess, tmp_path: Path) -> Iterator[AimBackend]:
    """mltrack's Aim backend on the real server; closed within 60 s (a hung queue must fail the test, not hang it)."""
    backend = AimBackend.from_config(
        BackendConfig("aim", options={"repo_path": aim_server.address, "artifacts_dir": str(tmp_path)})
    )
    yield backend
    closer = threading.Thread(target=backend.close, daemon=True)
    closer.start()
    closer.join(60)


def test_a_refused_write_is_raised_by_the_next_write_and_later_writes_are_stored(backend: AimBackend) -> None:
    # Aim's client queue kept retrying only closed connections: any other error in a queued
    # write ended its thread, and every later write waited on the queue for ever.
    run = ExperimentRun(id="5e" * 12, experiment_name="refusals")
    backend.mltrack_create_run(run)
    backend.mltrack_log_metrics(run.id, _batch([0, 1]))
    client = backend.repo._client
    tree = backend._runs[run.id].meta_run_tree.tree
    # A write the server refuses (its tree has no such method), queued as Aim queues writes.
    client.run_instruction(tree._hash, tree._handler, "no_such_method", (), is_write_only=True)

    error = _log_within(backend, run.id, [2, 3], 30)
    assert isinstance(error, BackendError)
    assert "refused 1 write" in str(error) and "no_such_method" in str(error)
    assert _log_within(backend, run.id, [2, 3], 30) is None  # as mltrack's writer retries it
    assert _log_within(backend, run.id, [4, 5], 30) is None
    (series,) = backend.mltrack_get_metrics(run.id, ["loss"]) or []
    assert series.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert series.values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("code", [1000, 1001])
def test_a_connection_the_server_closes_normally_is_reopened_and_the_write_sent(
    backend: AimBackend, code: int
) -> None:
    # A close with a normal code raises ConnectionClosedOK, which Aim's queue did not retry.
    run = ExperimentRun(id=f"{code:04d}" * 6, experiment_name="refusals")
    backend.mltrack_create_run(run)
    backend.repo._client.ws.close(code)
    assert _log_within(backend, run.id, [0, 1], 30) is None
    (series,) = backend.mltrack_get_metrics(run.id, ["loss"]) or []
    assert series.steps.tolist() == [0, 1]
