"""The async repository methods leave the event loop free while the store works."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import mltrack
from mltrack.errors import RunNotFoundError
from mltrack.factory import open_repository, tracking_session
from mltrack.hookspecs import RegisterBackend, hookimpl
from mltrack.models import ExperimentStatus, MetricSeries, RunFilter
from mltrack.plugins import get_plugin_host
from mltrack.repository import ExperimentRepository

DELAY = 0.4
"""How long each read of the slow store takes: long enough that a blocked loop is plain to see."""
TICK = 0.01
T = TypeVar("T")


def _register_slow_memory() -> None:
    """Backend ``slow_memory``: the memory backend, each read taking ``DELAY`` seconds."""
    memory = get_plugin_host().backends()["memory"].factory
    assert isinstance(memory, type), "the memory backend is registered by its class"

    class SlowMemory(memory):  # type: ignore[misc,valid-type]
        @hookimpl
        def mltrack_list_runs(self, run_filter: RunFilter) -> Any:
            time.sleep(DELAY)
            return super().mltrack_list_runs(run_filter)

        @hookimpl
        def mltrack_get_metrics(self, run_id: str, names: Any) -> list[MetricSeries] | None:
            time.sleep(DELAY)
            return super().mltrack_get_metrics(run_id, names)  # type: ignore[no-any-return]

    class SlowPlugin:
        @hookimpl
        def mltrack_register_backends(self, register: RegisterBackend) -> None:
            register("slow_memory", SlowMemory, persistent=False)

    get_plugin_host().register(SlowPlugin(), name="slow-memory")


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[ExperimentRepository, str]]:
    """A repository on a slow store holding one finished run with 200 points, and that run's id."""
    mltrack.configure_backend("memory", store=str(tmp_path))
    with mltrack.start_run("async-read", {"lr": 0.1}) as run:
        for step in range(200):
            run.log_metric("loss", 1.0 / (step + 1), step=step)
    tracking_session().flush()
    _register_slow_memory()
    repo = open_repository("slow_memory", store=str(tmp_path))
    yield repo, run.id
    repo.close()


def _with_ticker(read: Callable[[], Awaitable[T]]) -> tuple[T, int, float]:
    """Await ``read()`` in a real event loop beside a task ticking every ``TICK`` seconds.

    Returns what the read returned, how often the ticker ticked meanwhile, and how long it took.
    """

    async def scenario() -> tuple[T, int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(TICK)
                ticks += 1

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)  # the ticker is running before the read starts
        start = time.perf_counter()
        try:
            result = await read()
        finally:
            took = time.perf_counter() - start
            task.cancel()
        return result, ticks, took

    return asyncio.run(scenario())


def test_the_loop_keeps_ticking_while_a_slow_metric_read_is_awaited(
    slow: tuple[ExperimentRepository, str],
) -> None:
    repo, run_id = slow
    history, ticks, took = _with_ticker(lambda: repo.get_experiment_metrics(run_id))
    assert len(history.series("loss")) == 200
    assert took >= DELAY
    # A loop blocked by the read ticks at most once; a free one about took / TICK times.
    assert ticks >= 0.5 * took / TICK, f"{ticks} ticks in {took:.2f} s: the read blocked the event loop"


def test_two_slow_reads_leave_the_loop_free_and_both_answer(slow: tuple[ExperimentRepository, str]) -> None:
    repo, run_id = slow

    async def both() -> tuple[Any, ...]:
        return tuple(await asyncio.gather(repo.list_experiments(), repo.get_experiment_metrics(run_id)))

    (runs, history), ticks, took = _with_ticker(both)
    assert [r.experiment_id for r in runs] == [run_id]
    assert history.run_id == run_id
    assert took >= 2 * DELAY  # one store call at a time: the store need not be thread-safe
    assert ticks >= 0.5 * took / TICK, f"{ticks} ticks in {took:.2f} s: the reads blocked the event loop"


def test_an_error_in_the_store_thread_reaches_the_awaiting_code(
    slow: tuple[ExperimentRepository, str],
) -> None:
    repo, _ = slow
    with pytest.raises(RunNotFoundError, match="no run 'nope'"):
        asyncio.run(repo.get_experiment("nope"))


def test_write_run_writes_a_whole_run_that_reads_back_the_same(
    slow: tuple[ExperimentRepository, str], tmp_path: Path
) -> None:
    repo, run_id = slow
    summary = asyncio.run(repo.get_experiment(run_id))
    history = asyncio.run(repo.get_experiment_metrics(run_id))
    with open_repository("memory", store=str(tmp_path / "other")) as other:
        points = asyncio.run(other.write_run(summary, history.all_series))
        assert points == 200
        copied = other.get_experiment_sync(run_id)
        assert copied == summary
        assert copied.status is ExperimentStatus.COMPLETED
        loss = other.get_experiment_metrics_sync(run_id).series("loss")
        assert list(loss.steps) == list(history.series("loss").steps)
        assert list(loss.timestamps or ()) == list(history.series("loss").timestamps or ())
