"""A backend's preflight check makes ``create_run`` fail early, with a typed error, on a broken store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack.config import BackendConfig, TrackingConfig
from mltrack.errors import BackendError
from mltrack.hookspecs import RegisterBackend, hookimpl
from mltrack.memory import MemoryBackend
from mltrack.plugins import PluginHost
from mltrack.testing.conformance import Harness


class PickyStores:
    """Two memory backends whose preflight fails while a ``broken`` file sits in their store."""

    def __init__(self) -> None:
        self.checks: list[str] = []

    def _check(self, config: BackendConfig) -> None:
        self.checks.append(config.name)
        if (Path(config.options["store"]) / "broken").exists():
            raise BackendError(f"store of {config.name} is read-only")

    @hookimpl
    def mltrack_register_backends(self, register: RegisterBackend) -> None:
        for name in ("picky", "picky2"):
            register(name, MemoryBackend, persistent=False, preflight=self._check)


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    return first, second


@pytest.fixture
def plugin() -> PickyStores:
    return PickyStores()


@pytest.fixture
def harness(stores: tuple[Path, Path], plugin: PickyStores) -> Iterator[Harness]:
    host = PluginHost(load_entry_points=False)
    host.register(plugin, name="picky-stores")
    config = TrackingConfig(
        backends=("picky", "picky2"),
        backend_options={"picky": {"store": str(stores[0])}, "picky2": {"store": str(stores[1])}},
        writer="thread",
    )
    h = Harness(config, host)
    yield h
    h.close()


def test_a_healthy_store_is_checked_before_every_new_run(harness: Harness, plugin: PickyStores) -> None:
    harness.session.create_run("exp")
    harness.session.create_run("exp")
    assert plugin.checks == ["picky", "picky2"] * 2


def test_a_broken_primary_store_raises_at_create_run_and_no_run_is_opened(
    harness: Harness, stores: tuple[Path, Path]
) -> None:
    (stores[0] / "broken").touch()
    with pytest.raises(
        BackendError, match=r"backend 'picky' cannot take a new run: store of picky is read-only"
    ):
        harness.session.create_run("exp")
    assert harness.session.open_runs == []

    (stores[0] / "broken").unlink()  # the user fixes the store: the next run works
    run = harness.session.create_run("exp")
    harness.session.finish_run(run)
    assert [r.experiment_id for r in harness.repo.list_experiments_sync()] == [run.id]


def test_a_broken_secondary_store_does_not_stop_the_run_on_the_primary(
    harness: Harness, stores: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    (stores[1] / "broken").touch()
    run = harness.session.create_run("exp")
    harness.session.log_metric(run, "loss", 0.5, step=0)
    harness.session.finish_run(run)
    assert "backend 'picky2' cannot take a new run" in caplog.text
    assert list(harness.repo.get_experiment_metrics_sync(run.id).series("loss").values) == [0.5]


class Exploding:
    """A fan-out whose second store cannot even start (its factory raises)."""

    @hookimpl
    def mltrack_register_backends(self, register: RegisterBackend) -> None:
        register("steady", MemoryBackend, persistent=False)

        def explode(config: BackendConfig) -> object:
            raise ConnectionRefusedError("no store at 127.0.0.1:9")

        register("exploding", explode, persistent=False)


def _fanout(tmp_path: Path, names: tuple[str, ...]) -> tuple[PluginHost, TrackingConfig]:
    host = PluginHost(load_entry_points=False)
    host.register(Exploding(), name="exploding-stores")
    config = TrackingConfig(
        backends=names, backend_options={"steady": {"store": str(tmp_path)}}, writer="thread"
    )
    return host, config


def test_a_fanout_store_that_cannot_start_is_counted_and_named_while_the_other_stores_everything(
    tmp_path: Path,
) -> None:
    from mltrack.factory import build_session
    from mltrack.repository import ExperimentRepository

    host, config = _fanout(tmp_path, ("steady", "exploding"))
    backends = host.activate(config, tolerate_secondary=True)
    session = build_session(config, lambda: backends, host)
    run = session.create_run("fan")
    for step in range(100):
        session.log_metric(run, "loss", 1.0 / (step + 1), step=step)
    session.finish_run(run)

    repo = ExperimentRepository(backends)
    assert len(repo.get_experiment_metrics_sync(run.id).series("loss").values) == 100
    assert session.stats.points_undelivered == 100  # every point the broken store did not get
    assert session.stats.retries == 0  # a store that never started is not retried
    health = dict(backends.health())
    assert not health["exploding"].is_healthy
    assert "could not start: ConnectionRefusedError: no store at 127.0.0.1:9" in health["exploding"].issues[0]
    session.close()
    backends.close()


def test_a_primary_store_that_cannot_start_raises(tmp_path: Path) -> None:
    host, config = _fanout(tmp_path, ("exploding", "steady"))
    with pytest.raises(ConnectionRefusedError):
        host.activate(config, tolerate_secondary=True)
