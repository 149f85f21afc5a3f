"""The public API's behaviour around the edges: run state, exits, health after store failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

import mltrack
from mltrack import ExperimentStatus, RunStateError, health_check
from mltrack.factory import experiment_repository, tracking_session
from mltrack.plugins import get_plugin_host

pytestmark = pytest.mark.usefixtures("use_memory")


def test_with_block_finishes_failed_on_exception_and_reraises() -> None:
    with pytest.raises(ZeroDivisionError), mltrack.start_run("boom") as run:
        run.log_metric("m", 1.0)
        _ = 1 / 0
    assert experiment_repository().get_experiment_sync(run.id).status is ExperimentStatus.FAILED


def test_with_block_finishes_interrupted_on_keyboard_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt), mltrack.start_run("ctrl-c") as run:
        raise KeyboardInterrupt
    assert experiment_repository().get_experiment_sync(run.id).status is ExperimentStatus.INTERRUPTED


def test_logging_to_a_finished_run_is_a_clear_error() -> None:
    run = mltrack.start_run("done")
    run.finish()
    with pytest.raises(RunStateError, match="not open"):
        run.log_metric("m", 1.0)


def test_uncaught_exception_at_exit_marks_the_open_run_failed(tmp_path) -> None:
    code = f"""
import atexit, mltrack
from mltrack import memory
atexit.register(lambda: print(memory._stores[{str(tmp_path)!r}][run.id].status.value))
mltrack.configure_backend("memory", store={str(tmp_path)!r})
run = mltrack.start_run("crashing-script")
raise RuntimeError("training blew up")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stdout.strip() == "failed"


class FlakyStore:
    """A backend whose writes always fail."""

    def __init__(self, config: object) -> None:
        pass

    @mltrack.hookimpl
    def mltrack_create_run(self, run: object) -> None:
        raise OSError("store unreachable")

    @mltrack.hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: object) -> None:
        raise OSError("store unreachable")


class FlakyPlugin:
    @mltrack.hookimpl
    def mltrack_register_backends(self, register) -> None:  # type: ignore[no-untyped-def]
        register("flaky", FlakyStore)


def test_store_failures_never_reach_the_training_loop_and_show_in_health() -> None:
    get_plugin_host().register(FlakyPlugin(), name="flaky-plugin")
    mltrack.configure(backends=("flaky",), max_retries=1, retry_window=0.2)
    run = mltrack.start_run("unlucky")
    for step in range(10):
        run.log_metric("m", float(step), step=step)  # never raises
    tracking_session().flush()
    health = asyncio.run(health_check())
    assert not health.is_healthy
    # Not lost: they wait in the local spool until the store takes them (or `mltrack sync`).
    assert "10 point(s) wait in the spool" in health.issues[0]
    assert "store unreachable" in health.issues[0]
    assert health.details["writer"]["points_waiting"] == 10
    assert health.details["writer"]["points_undelivered"] == 0


def test_config_values_named_like_secrets_are_masked() -> None:
    config = {
        "learning_rate": 3e-4,
        "api_key": "sk-live-123",
        "db": {"password": "hunter2", "host": "x"},
        "key_dim": 64,
    }
    with mltrack.start_run("secrets", config) as run:
        run.log_params({"wandb_token": "abc", "monkey": "ok"})
    stored = experiment_repository().get_experiment_sync(run.id).config
    assert stored == {
        "learning_rate": 3e-4,
        "api_key": "***",
        "db": {"password": "***", "host": "x"},
        "key_dim": 64,
        "wandb_token": "***",
        "monkey": "ok",
    }


def test_secrets_are_kept_when_the_user_opts_in() -> None:
    mltrack.configure(keep_secrets=True)
    with mltrack.start_run("secrets", {"api_key": "sk-live-123"}) as run:
        pass
    assert experiment_repository().get_experiment_sync(run.id).config == {"api_key": "sk-live-123"}


class FailingIntegration:
    """An integration plugin (no backend) that reports its own failures."""

    @mltrack.hookimpl
    def mltrack_health(self) -> mltrack.HealthStatus:
        return mltrack.HealthStatus(False, ("3 callbacks failed",), backend="integration")


def test_health_includes_plugins_that_are_not_backends() -> None:
    get_plugin_host().register(FailingIntegration(), name="integration")
    health = asyncio.run(health_check())
    assert not health.is_healthy
    assert health.issues == ("integration: 3 callbacks failed",)
    assert health.details["backends"]["memory"]["is_healthy"] is True


class HangingObserver:
    """An observer whose hook never returns."""

    def __init__(self) -> None:
        import threading

        self.release = threading.Event()

    @mltrack.hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: object) -> None:
        self.release.wait(30)


class RaisingObserver:
    @mltrack.hookimpl
    def mltrack_log_metrics(self, run_id: str, batch: object) -> None:
        raise RuntimeError("observer bug")


class CountingObserver:
    def __init__(self) -> None:
        self.points = 0

    @mltrack.hookimpl
    def mltrack_log_metrics(self, run_id: str, batch) -> None:  # type: ignore[no-untyped-def]
        self.points += len(batch)


def test_a_hanging_or_raising_plugin_is_cut_off_and_the_others_keep_working() -> None:
    import time

    host = get_plugin_host()
    hanging, counting = HangingObserver(), CountingObserver()
    host.register(hanging, name="hanging-observer")
    host.register(RaisingObserver(), name="raising-observer")
    host.register(counting, name="counting-observer")
    mltrack.configure(hook_timeout=0.5, max_retries=0)
    started = time.monotonic()
    with mltrack.start_run("isolated") as run:
        for step in range(100):
            run.log_metric("m", float(step), step=step)
        run.log_metric("m", 100.0, step=100)
    assert time.monotonic() - started < 10
    assert len(experiment_repository().get_experiment_metrics_sync(run.id)) == 101  # the backend has it all
    assert counting.points == 101
    health = asyncio.run(health_check())
    assert not health.is_healthy
    writer = health.details["writer"]
    assert writer["points_undelivered"] == 0  # observers failing loses no stored data
    errors = tracking_session().stats.errors_by_target
    assert set(errors) == {"hanging-observer", "raising-observer"}
    assert "plugin 'raising-observer'" in "".join(health.issues) or "plugin 'hanging-observer'" in "".join(
        health.issues
    )
    hanging.release.set()


@pytest.mark.parametrize(
    "name", ["../other-run/model.zip", "/etc/passwd", "a/../../x", "C:/x", "a//b", "./x"]
)
def test_artifact_names_cannot_leave_the_store(tmp_path, name: str) -> None:
    source = tmp_path / "model.zip"
    source.write_bytes(b"x")
    with mltrack.start_run("artifacts") as run, pytest.raises(mltrack.ArtifactError, match="relative path"):
        run.log_artifact(source, "model", name=name)


def test_artifact_names_may_have_folders(tmp_path) -> None:
    source = tmp_path / "model.zip"
    source.write_bytes(b"x")
    with mltrack.start_run("artifacts") as run:
        stored = run.log_artifact(source, "model", name="models/best_model.zip")
    assert stored.name == "models/best_model.zip"
