"""A run published to a real Redis: events in order, session state with a TTL, crashed and stalled runs announced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from _live import RedisServer, collect

import mltrack
from mltrack.factory import health_sync
from mltrack.models import ExperimentRun, ExperimentStatus
from mltrack_redis import protocol as p
from mltrack_redis.plugin import current_publisher
from mltrack_redis.publisher import Publisher, safe_url


@pytest.fixture
def published(tmp_path: Path, redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Track into a memory store with live publishing to this test's Redis."""
    monkeypatch.setenv("MLTRACK_REDIS_URL", redis_server.url)
    mltrack.configure_backend("memory", store=str(tmp_path))
    return redis_server


def test_a_run_is_published_in_order_and_replayed_to_a_late_subscriber(published: Any) -> None:
    with mltrack.start_run("live", config={"lr": 0.1}, name="first") as run:
        for step in range(5):
            run.log_metrics({"loss": 1.0 / (step + 1), "reward": float(step)}, step=step)
            run.set_state(phase="train" if step % 2 else "rollout")
        run.progress(5, 5)
        run.log_params({"batch": 32})
        run.set_tags(["smoke"])

    events = collect(published.url, run=run.id, timeout=10)
    kinds = [e.type for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert events[0].data["experiment"] == "live" and events[0].data["config"] == {"lr": 0.1}
    points = [(pt.name, pt.step, pt.value) for e in events for pt in e.points]
    assert sorted(points) == sorted(
        [("loss", s, 1.0 / (s + 1)) for s in range(5)] + [("reward", s, float(s)) for s in range(5)]
    )
    # In order: each step's points come before the state set after them.
    order = [(e.type, e.data.get("phase")) for e in events if e.type in ("metrics", "state")]
    assert order[-1] == ("state", None)  # progress (its own update) last
    phases = [ph for kind, ph in order if kind == "state" and ph]
    assert phases == ["rollout", "train", "rollout", "train", "rollout"]
    assert events[-1].data["status"] == "completed"
    assert events[-1].data["final_metrics"]["loss"] == pytest.approx(0.2)
    assert "params" in kinds and "tags" in kinds

    client: Any = published.client()
    state = client.hgetall(p.state_key(run.id))
    assert state["status"] == "completed" and state["experiment"] == "live" and state["name"] == "first"
    assert '"progress_done":5' in state["state"]
    assert 0 < client.ttl(p.state_key(run.id)) <= p.FINISHED_TTL  # disappears on its own
    assert not client.exists(p.alive_key(run.id))


def test_session_state_has_a_ttl_refreshed_by_the_heartbeat(published: Any) -> None:
    client: Any = published.client()
    with mltrack.start_run("ttl") as run:
        run.set_state(phase="warmup", epoch=1)
        deadline = time.monotonic() + 5
        while not client.exists(p.state_key(run.id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        first = client.hget(p.state_key(run.id), "heartbeat")
        time.sleep(2.5)  # a heartbeat a second, with room for a busy machine
        assert client.hget(p.state_key(run.id), "heartbeat") != first
        assert 0 < client.ttl(p.state_key(run.id)) <= p.STATE_TTL
        assert client.pttl(p.alive_key(run.id)) > 0
        assert client.zscore(p.RUNS, run.id) is not None


def _child(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        text=True,
    )


TRAINER = """
    import sys, time, mltrack
    mltrack.configure_backend("memory", store=sys.argv[1] if len(sys.argv) > 1 else None)
    run = mltrack.start_run("doomed")
    print(run.id, flush=True)
    run.log_metric("loss", 1.0, step=0)
    time.sleep(600)
"""


def test_a_killed_trainer_is_announced_crashed(redis_server: Any) -> None:
    child = _child(TRAINER, {"MLTRACK_REDIS_URL": redis_server.url, "MLTRACK_REDIS_DEAD_AFTER": "1.5"})
    try:
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        events = collect(redis_server.url, run=run_id, until=lambda e: e.type == "metrics", timeout=10)
        assert events[-1].type == "metrics"
        os.kill(child.pid, signal.SIGKILL)
        killed = time.monotonic()
        events = collect(redis_server.url, run=run_id, replay=False, timeout=15)
        assert events and events[-1].type == "crashed", [e.type for e in events]
        assert time.monotonic() - killed < 6
        assert events[-1].data["pid"] == str(child.pid)
        assert redis_server.client().hget(p.state_key(run_id), "status") == "crashed"
        # Announced once: a second watcher replaying the stream sees the same single event.
        again = collect(redis_server.url, run=run_id, timeout=5)
        assert [e.type for e in again].count("crashed") == 1
    finally:
        child.kill()
        child.wait()


def test_a_run_without_progress_is_announced_stalled(redis_server: Any) -> None:
    child = _child(TRAINER, {"MLTRACK_REDIS_URL": redis_server.url, "MLTRACK_REDIS_STALL_AFTER": "1"})
    try:
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        events = collect(redis_server.url, run=run_id, until=lambda e: e.type == "stalled", timeout=10)
        assert events[-1].type == "stalled", [e.type for e in events]
        assert events[-1].data["reason"].startswith("no metric")
    finally:
        child.kill()
        child.wait()


def test_a_broker_that_is_down_never_slows_logging_and_drops_are_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mltrack.servers import free_port

    monkeypatch.setenv("MLTRACK_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    mltrack.configure_backend("memory", store=str(tmp_path))
    started = time.perf_counter()
    with mltrack.start_run("offline") as run:
        for step in range(20_000):
            run.log_metric("loss", 1.0, step=step)
            if step % 1000 == 0:
                run.progress(step, 20_000)
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"logging with Redis down took {elapsed:.1f} s"
    health = health_sync()
    redis_health = [i for i in health.issues if i.startswith("redis:")]
    assert redis_health and "unreachable" in redis_health[0]
    details = health.details["backends"]["redis"]
    assert details["connected"] is False
    assert details["published_events"] == 0
    # And the store has every point regardless.
    series = mltrack.open_repository("memory", store=str(tmp_path)).get_experiment_metrics_sync(run.id)
    assert len(series.series("loss")) == 20_000


def test_a_full_buffer_drops_the_newest_metrics_but_keeps_start_and_end() -> None:
    from mltrack.servers import free_port

    publisher = Publisher(
        f"redis://127.0.0.1:{free_port()}/0", stall_after=60, dead_after=5, max_buffered_events=3
    )
    try:
        publisher.submit("started", "r1", ExperimentRun(id="r1", experiment_name="x"))
        for _ in range(5):
            publisher.submit("state", "r1", {"phase": "x"})
        publisher.submit("finished", "r1", (ExperimentStatus.COMPLETED, datetime.now(timezone.utc), {}))
        assert publisher.stats.dropped_events >= 3
        assert publisher.buffered <= 4
    finally:
        publisher.close(timeout=0.1)


def test_urls_with_passwords_are_masked() -> None:
    assert safe_url("redis://:s3cret@host:6379/0") == "redis://:***@host:6379/0"
    assert safe_url("rediss://user:s3cret@host/1") == "rediss://user:***@host/1"
    assert safe_url("redis://host:6379/0") == "redis://host:6379/0"


def test_without_the_url_nothing_is_published(tmp_path: Path) -> None:
    mltrack.configure_backend("memory", store=str(tmp_path))
    with mltrack.start_run("quiet") as run:
        run.log_metric("loss", 1.0)
    assert current_publisher() is None
    assert health_sync().details["backends"]["redis"]["enabled"] is False


INTERRUPTED_TRAINER = """
    import time, mltrack
    mltrack.configure_backend("memory")
    with mltrack.start_run("interrupted") as run:
        print(run.id, flush=True)
        for step in range(100_000):
            run.log_metric("loss", 1.0, step=step)
            time.sleep(0.01)
"""


def test_ctrl_c_to_the_process_group_still_publishes_the_interrupted_end(redis_server: Any) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(INTERRUPTED_TRAINER)],
        env={**os.environ, "MLTRACK_REDIS_URL": redis_server.url},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a terminal of its own: SIGINT to the group is Ctrl-C there
    )
    try:
        assert child.stdout is not None
        run_id = child.stdout.readline().strip()
        collect(redis_server.url, run=run_id, until=lambda e: e.type == "metrics", timeout=10)
        os.killpg(child.pid, signal.SIGINT)
        events = collect(redis_server.url, run=run_id, timeout=15)
        assert events[-1].type == "finished" and events[-1].data["status"] == "interrupted"
        child.wait(10)
    finally:
        child.kill()
        child.wait()


def test_a_redis_with_a_password_works_and_the_password_is_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        monkeypatch.setenv("MLTRACK_REDIS_URL", server.url)
        mltrack.configure_backend("memory", store=str(tmp_path))
        with mltrack.start_run("guarded") as run:
            run.log_metric("loss", 0.25, step=3)
        events = collect(server.url, run=run.id, timeout=10)
        assert [pt.value for e in events for pt in e.points] == [0.25]
        details = health_sync().details["backends"]["redis"]
        assert details["connected"] is True and "s3cret-pw" not in str(details)
    finally:
        from mltrack_redis.plugin import reset_publisher

        reset_publisher()
        server.stop()
