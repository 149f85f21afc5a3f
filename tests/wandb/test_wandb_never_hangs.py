"""``WANDB_MODE=online`` against a W&B server that never answers: nothing waits longer than the timeout.

The server here accepts connections and never replies (a stalled service, the case of
wandb#5601 and #11179). Uploads run as ``wandb sync`` in the background: training and
``finish_run`` never wait for them, the end of the process waits at most
``MLTRACK_WANDB_TIMEOUT``, and what was stopped is counted in ``health_check()``, the run folder
intact for a later ``wandb sync``.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mltrack.config import TrackingConfig
from mltrack.testing.conformance import Harness

from _child import popen_python

TIMEOUT = 2.0


@pytest.fixture
def stalled_server() -> Iterator[str]:
    """A TCP server on loopback that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def online_env(stalled_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {
        "WANDB_MODE": "online",
        "WANDB_BASE_URL": stalled_server,
        "WANDB_API_KEY": "x" * 40,
        "MLTRACK_WANDB_TIMEOUT": str(TIMEOUT),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_finish_never_waits_and_close_stops_a_stalled_upload_within_the_timeout(
    wandb_root: Path, online_env: dict[str, str]
) -> None:
    config = TrackingConfig(backends=("wandb",), storage_path=str(wandb_root), strict=True, writer="thread")
    harness = Harness(config)
    run = harness.session.create_run("online", {"lr": 0.1})
    for step in range(100):
        harness.session.log_metric(run, "loss", 1.0 / (step + 1), step=step)
    started = time.monotonic()
    harness.session.finish_run(run)
    assert time.monotonic() - started < 1.0  # the upload runs in the background
    (answer,) = [a for name, a in harness.backends.health() if name == "wandb"]
    assert answer.details["mode"] == "online"
    assert answer.details["uploads_running"] == 1

    started = time.monotonic()
    harness.close()  # waits for the upload, at most TIMEOUT, then stops it
    closed_in = time.monotonic() - started
    assert TIMEOUT - 0.5 < closed_in < TIMEOUT + 5

    reader = Harness(config)
    try:
        got = reader.repo.get_experiment_sync(run.id)  # the folder is whole, for a later `wandb sync`
        assert got.status.value == "completed"
        assert len(reader.repo.get_experiment_metrics_sync(run.id).series("loss").steps) == 100
    finally:
        reader.close()


def test_health_counts_a_stopped_upload_with_the_fix(wandb_root: Path, online_env: dict[str, str]) -> None:
    from mltrack.config import BackendConfig
    from mltrack_wandb.backend import WandbBackend
    from mltrack_wandb.settings import WandbSettings

    backend = WandbBackend(WandbSettings.from_config(BackendConfig("wandb", storage_path=str(wandb_root))))
    config = TrackingConfig(backends=("wandb",), storage_path=str(wandb_root), strict=True, writer="thread")
    harness = Harness(config)
    run = harness.session.create_run("online")
    harness.session.finish_run(run)
    harness.close()
    backend.uploads.start(run.id, next((wandb_root / "wandb").glob(f"*-{run.id}")))
    assert backend.wait_for_uploads(timeout=0.5) is False
    health = backend.mltrack_health()
    assert not health.is_healthy
    assert health.details["upload_failures"] == 1
    (issue,) = health.issues
    assert "stopped after 0.5 s" in issue and "wandb sync" in issue and "WANDB_BASE_URL" in issue


def test_a_trainer_exits_within_the_timeout_of_its_last_log_call(
    wandb_root: Path, online_env: dict[str, str]
) -> None:
    """The trainer's whole process (its writer process, the stalled upload) ends within the timeout."""
    child = popen_python(
        """
        import time, mltrack
        run = mltrack.start_run("online-exit")
        for step in range(1000):
            run.log_metric("loss", float(step), step=step)
        print(time.time(), flush=True)
        """,
        env={**online_env, "ML_TRACKING_BACKEND": "wandb", "ML_STORAGE_PATH": str(wandb_root)},
    )
    assert child.stdout is not None and child.stderr is not None
    last_call = float(child.stdout.readline() or "nan")
    code = child.wait(120)
    exited_in = time.time() - last_call
    assert code == 0, child.stderr.read()[-3000:]
    assert exited_in < TIMEOUT + 10, exited_in
    assert len(list((wandb_root / "wandb").glob("offline-run-*"))) == 1


def test_an_upload_that_fails_at_once_is_counted_with_the_fix(
    wandb_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No API key: ``wandb sync`` ends at once with an error; health names the run and the fix."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc holding a key
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:1")
    config = TrackingConfig(backends=("wandb",), storage_path=str(wandb_root), strict=True, writer="thread")
    harness = Harness(config)
    try:
        run = harness.session.create_run("online")
        harness.session.finish_run(run)
        deadline = time.monotonic() + 30
        while True:
            (answer,) = [a for name, a in harness.backends.health() if name == "wandb"]
            if answer.details["uploads_running"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert answer.details["upload_failures"] == 1 and answer.details["uploads_done"] == 0
        assert not answer.is_healthy
        (issue,) = answer.issues
        assert f"upload of run {run.id} failed (wandb sync exit code 1)" in issue and "WANDB_API_KEY" in issue
    finally:
        harness.close()
