"""Live monitoring on Redis (mltrack-redis): latency, cost to the training loop, and load.

Three goals, against a real ``redis-server`` on loopback (no persistence), fresh processes:

* latency from ``log_metric`` returning to a subscriber in another process receiving the point
  (``mltrack.live.subscribe``): p50 and p99, goal p99 <= 300 ms;
* the calling thread's cost of ``log_metric`` with the publisher on vs off (the same Aim run
  otherwise, interleaved, medians): goal no measurable change (within 10%);
* 50 concurrent runs x 1,000 points/s into one Redis (5 processes x 10 runs): nothing dropped,
  every point in the streams.

``run.py`` calls :func:`bench_redis`; alone, ``python benchmarks/redis_bench.py [--quick]``
prints the same rows.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import peers

__all__ = ["bench_redis", "main"]

PACES = (20_000, 0)
"""Logging rates of the cost goal: a busy training loop's, and a hot loop doing nothing else."""

SUBSCRIBER = """
import asyncio, json, sys, time
import mltrack.live

async def main():
    print("ready", flush=True)
    async for event in mltrack.live.subscribe(experiment="bench-latency"):
        now = time.time()
        for point in event.points:
            print(json.dumps([point.step, now - point.value]), flush=True)
        if event.is_final:
            return

asyncio.run(main())
"""

LATENCY_TRAINER = """
import mltrack
N = int(os.environ["N"])
run = mltrack.start_run("bench-latency")
time.sleep(1.0)  # the subscriber follows the run from its start
for i in range(N):
    run.log_metric("sent_at", time.time(), step=i)  # the value is the time of the call
    time.sleep(0.01)
run.finish()
emit(points=N)
"""

COST = """
import mltrack
N, PACE = int(os.environ["N"]), float(os.environ["PACE"])  # PACE: points a second, 0 = a hot loop
run = mltrack.start_run("bench-cost")
log = run.log_metric
chunk = 1000
spent = []
for start in range(0, N, chunk):
    t0 = time.perf_counter()
    for i in range(start, start + chunk):
        log("loss", 0.5, step=i)
    took = time.perf_counter() - t0
    spent.append(took)
    if PACE:
        time.sleep(max(0.0, chunk / PACE - took))  # the rest of a training step's time
run.finish()
from mltrack.factory import health_sync
redis = health_sync().details["backends"].get("redis", {})
mean_us = sum(spent) / N * 1e6
spent.sort()
emit(per_point_us=spent[len(spent) // 2] / chunk * 1e6, mean_us=mean_us, published=redis.get("published_points", 0))
"""

LOAD = """
import mltrack
from mltrack.factory import health_sync
RUNS, SECONDS, RATE = int(os.environ["RUNS"]), float(os.environ["SECONDS"]), int(os.environ["RATE"])
runs = [mltrack.start_run("bench-load", name=f"{os.getpid()}-{k}") for k in range(RUNS)]
tick = 0.01
per_tick = max(1, int(RATE * tick))
step = 0
t0 = time.monotonic()
while time.monotonic() - t0 < SECONDS:
    for run in runs:
        for j in range(per_tick):
            run.log_metric("loss", 0.5, step=step + j)
    step += per_tick
    time.sleep(max(0.0, t0 + (step / per_tick) * tick - time.monotonic()))
for run in runs:
    run.finish()
redis = health_sync().details["backends"]["redis"]
emit(points=step * RUNS, ids=[r.id for r in runs], dropped=redis["dropped_events"],
     published=redis["published_points"], seconds=time.monotonic() - t0)
"""


@contextlib.contextmanager
def redis_server(root: Path) -> Iterator[str]:
    """A redis-server on a free loopback port, no persistence, stopped (its group) on exit."""
    import redis

    from mltrack.servers import ServerProcess, free_port

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    log = root / "redis.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mltrack._guard", "--", *argv, "--dir", str(root)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ServerProcess(proc, f"redis://127.0.0.1:{port}/0", log)
    try:
        client = redis.Redis.from_url(server.url)
        for _ in range(200):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.05)
        client.close()
        yield server.url
    finally:
        server.stop()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _backend_env(where: Path) -> dict[str, str]:
    if importlib.util.find_spec("mltrack_aim") is not None:
        return {"ML_TRACKING_BACKEND": "aim", "AIM_REPO_PATH": str(where)}
    return {"ML_TRACKING_BACKEND": "memory"}


def _latency(url: str, root: Path, n: int) -> list[float]:
    env = {**os.environ, "MLTRACK_REDIS_URL": url}
    sub = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SUBSCRIBER)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert sub.stdout is not None
        sub.stdout.readline()  # ready
        peers.run_workload(
            LATENCY_TRAINER,
            str(root / "lat"),
            {"N": n, "MLTRACK_REDIS_URL": url, **_backend_env(root / "lat")},
        )
        out, _ = sub.communicate(timeout=60)
    finally:
        sub.kill()
        sub.wait()
    latencies = [json.loads(line)[1] for line in out.splitlines() if line.startswith("[")]
    if len(latencies) != n:
        raise RuntimeError(f"the subscriber received {len(latencies)} of {n} points")
    return latencies


def _load(url: str, root: Path, quick: bool) -> dict[str, Any]:
    import redis

    procs, runs_each = 5, 10
    seconds = 5.0 if quick else 10.0
    env = {
        "MLTRACK_REDIS_URL": url,
        "ML_TRACKING_BACKEND": "memory",
        "RUNS": str(runs_each),
        "SECONDS": str(seconds),
        "RATE": "1000",
    }
    code = peers._PRELUDE + textwrap.dedent(LOAD)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(peers._INHERITED_PREFIXES)}
    full_env = {**inherited, **env, "BENCH_WHERE": str(root)}
    children = [
        subprocess.Popen([sys.executable, "-c", code], env=full_env, stdout=subprocess.PIPE, text=True)
        for _ in range(procs)
    ]
    reports = []
    for child in children:
        out, _ = child.communicate(timeout=300)
        line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
        reports.append(json.loads(line[len("RESULT ") :]))
    client = redis.Redis.from_url(url, decode_responses=True)
    in_streams = 0
    for report in reports:
        for run_id in report["ids"]:
            for _id, fields in client.xrange(f"mltrack:run:{run_id}:stream"):
                if fields.get("type") == "metrics":
                    in_streams += sum(len(s["steps"]) for s in json.loads(fields["data"])["series"])
    client.close()
    return {
        "runs": procs * runs_each,
        "logged": sum(r["points"] for r in reports),
        "published": sum(r["published"] for r in reports),
        "dropped": sum(r["dropped"] for r in reports),
        "in_streams": in_streams,
        "rate": sum(r["points"] / r["seconds"] for r in reports) / (procs * runs_each),
    }


def bench_redis(results: Any, root: Path, repeats: int, quick: bool) -> None:
    """Measure the three goals, adding goal rows and a section to ``results`` (run.py's Results)."""
    if shutil.which("redis-server") is None:
        results.goal("R", "redis: live monitoring", "not measured: redis-server is not installed", "-", None)
        return
    n_lat = 300 if quick else 1000
    n_cost = 100_000 if quick else 500_000
    with redis_server(root) as url:
        latencies = _latency(url, root, n_lat)
        cost: dict[tuple[int, bool], list[float]] = {}
        means: dict[tuple[int, bool], list[float]] = {}
        for pace in PACES:
            for round_ in range(repeats):
                for publish in [True, False] if round_ % 2 == 0 else [False, True]:
                    n = n_cost if pace == 0 else pace * (2 if quick else 5)
                    env = {"N": n, "PACE": pace, **_backend_env(root / f"cost-{pace}-{round_}-{publish}")}
                    if publish:
                        env["MLTRACK_REDIS_URL"] = url
                    m = peers.run_workload(COST, str(root), env)
                    cost.setdefault((pace, publish), []).append(m["per_point_us"])
                    means.setdefault((pace, publish), []).append(m["mean_us"])
                    if publish and m["published"] != n:
                        raise RuntimeError(f"published {m['published']} of {n} points")
        load = _load(url, root, quick)
    p50, p99 = _pct(latencies, 0.5) * 1000, _pct(latencies, 0.99) * 1000
    results.goal(
        "R1",
        "redis: `log_metric` returning -> subscriber in another process has the point",
        f"p50 {p50:.0f} ms, p99 {p99:.0f} ms ({n_lat} points)",
        "p99 <= 300 ms",
        p99 <= 300,
    )
    for pace in PACES:
        on, off = statistics.median(cost[pace, True]), statistics.median(cost[pace, False])
        how = "a hot loop (2 cores saturated)" if pace == 0 else f"{pace:,} points/s"
        results.goal(
            "R2" if pace else "R2b",
            f"redis: calling-thread cost of `log_metric`, publisher on vs off, {how}",
            f"{on:.2f} µs vs {off:.2f} µs (x{on / off:.2f})",
            "no measurable change (<= x1.10)" if pace else "(reported)",
            on / off <= 1.10 if pace else None,
        )
    nothing_lost = load["dropped"] == 0 and load["published"] == load["logged"] == load["in_streams"]
    results.goal(
        "R3",
        f"redis: {load['runs']} concurrent runs x 1,000 points/s into one Redis",
        f"{load['logged']:,} points at {load['rate']:.0f}/s per run: {load['dropped']} dropped, "
        f"{load['in_streams']:,} in the streams",
        "nothing dropped",
        nothing_lost,
    )

    def rounded(values: list[float]) -> str:
        return "/".join(f"{v:.2f}" for v in values)

    costs = "; ".join(
        f"{p or 'hot loop'}: median {rounded(cost[p, True])} vs {rounded(cost[p, False])}, "
        f"mean {rounded(means[p, True])} vs {rounded(means[p, False])}"
        for p in PACES
    )
    results.sections.append(
        "### Live monitoring (mltrack-redis)\n\n"
        f"Latency from `log_metric` returning to a subscriber process receiving the point: p50 {p50:.0f} ms, "
        f"p90 {_pct(latencies, 0.9) * 1000:.0f} ms, p99 {p99:.0f} ms, max {max(latencies) * 1000:.0f} ms "
        f"(flush interval 100 ms). `log_metric` cost in µs a call (median and mean of 1,000-call chunks), publisher "
        f"on vs off, points/s: {costs} (the mean takes in the chunks slowed when the processes outnumber the cores). "
        f"Load: {load}.\n"
    )


class _Printed:
    """Results that only print (standalone use)."""

    def __init__(self) -> None:
        self.sections: list[str] = []

    def goal(self, number: str, what: str, measured: str, target: str, met: bool | None) -> None:
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        print(f"[{verdict}] {number} {what}: {measured} (goal {target})", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    args = parser.parse_args()
    results = _Printed()
    with tempfile.TemporaryDirectory(prefix="mltrack-redis-bench-") as tmp:
        bench_redis(results, Path(tmp), 2 if args.quick else 3, args.quick)
    print("\n".join(results.sections))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise SystemExit(main())
