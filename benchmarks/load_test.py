"""Load test of the reference deployment: many trainers log into one ``mlflow server`` at once.

``python benchmarks/load_test.py`` (or ``nox -s load``) starts the cluster (PostgreSQL,
SeaweedFS S3, ``mlflow server``; see ``mltrack cluster up``), then:

1. starts N trainer processes, each with an environment and storage folder of its own, each
   logging P points of ``loss`` and 3 artifacts through mltrack (``ML_TRACKING_BACKEND=mlflow``,
   ``MLFLOW_TRACKING_URI=http://...``) at a steady pace, all at once;
2. SIGKILLs one trainer mid-way and restarts ``mlflow server`` once while the others log;
3. checks, in PostgreSQL itself, that every point of every finished trainer is there and every
   point the killed one's ``log_metric`` returned more than the flush interval before the
   kill; in the object store, that every artifact is there with its sha256; that the killed
   run reads CRASHED; and that ``mltrack ls`` lists all N runs in under a second;
4. has N raw MLflow clients (``MlflowClient.log_batch``, 1,000 points a call) log as many
   points into the same server, for the throughput of the server itself.

The figures go into ``benchmarks/RESULTS.md`` between the load-test markers (``--write``).
``tests/cluster`` runs the same code: short in CI, in full as a slow test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
BEGIN_MARK = "<!-- load-test:begin -->"
END_MARK = "<!-- load-test:end -->"
FLUSH_INTERVAL = 0.1
"""mltrack's ``MLTRACK_FLUSH_INTERVAL`` in the trainers (its default)."""

TRAINER = """
import hashlib, os, sys, time
import mltrack

index, points, pace, tag = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
with mltrack.start_run("load-test", {"trainer": index, "points": points}, name=f"trainer-{index}",
                       tags=[tag]) as run:
    print("run", run.id, flush=True)
    for k, size in enumerate((4_096, 65_536, 1_048_576)):
        path = f"artifact-{k}.bin"
        data = os.urandom(size)
        with open(path, "wb") as fh:
            fh.write(data)
        run.log_artifact(path, "other", name=f"artifact-{k}.bin")
        print("artifact", f"artifact-{k}.bin", hashlib.sha256(data).hexdigest(), flush=True)
    started = time.monotonic()
    chunk = 500
    for step in range(points):
        run.log_metric("loss", 1.0 / (1 + step), step=step)
        if step % 50 == 49 or step == points - 1:
            print(step, time.time(), flush=True)  # every step up to here returned by now
        if step % chunk == chunk - 1:
            ahead = started + pace * (step + 1) / points - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
print("done", time.time(), flush=True)
"""

RAW_CLIENT = """
import sys, time
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

uri, points, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = MlflowClient(uri)
exp = client.get_experiment_by_name("load-test-raw")
exp_id = exp.experiment_id if exp else None
if exp_id is None:
    try:
        exp_id = client.create_experiment("load-test-raw")
    except Exception:
        exp_id = client.get_experiment_by_name("load-test-raw").experiment_id
run = client.create_run(exp_id, tags={"load": tag})
now = int(time.time() * 1000)
for start in range(0, points, 1000):
    batch = [Metric("loss", 1.0 / (1 + s), now, s) for s in range(start, min(points, start + 1000))]
    client.log_batch(run.info.run_id, metrics=batch)
client.set_terminated(run.info.run_id)
print("raw", run.info.run_id, flush=True)
"""


@dataclass
class Trainer:
    """One trainer process and what it printed."""

    index: int
    proc: subprocess.Popen[str]
    folder: Path
    run_id: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    progress: list[tuple[int, float]] = field(default_factory=list)
    done_at: float | None = None
    killed_at: float | None = None
    stderr: list[str] = field(default_factory=list)

    def read(self) -> None:
        """Collect the trainer's lines until it exits (runs in a thread of its own)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            fields = line.split()
            if not line.endswith("\n") or not fields:
                continue
            if fields[0] == "run":
                self.run_id = fields[1]
            elif fields[0] == "artifact":
                self.artifacts[fields[1]] = fields[2]
            elif fields[0] == "done":
                self.done_at = float(fields[1])
            elif len(fields) == 2:
                self.progress.append((int(fields[0]), float(fields[1])))

    def read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    @property
    def last_step(self) -> int:
        return self.progress[-1][0] if self.progress else -1


@dataclass
class LoadResult:
    """The figures of one load test."""

    trainers: int
    points_per_trainer: int
    mltrack_points: int
    mltrack_seconds: float
    mltrack_points_per_s: float
    raw_points: int
    raw_seconds: float
    raw_points_per_s: float
    killed_points_required: int
    killed_points_stored: int
    lost_points: int
    lost_returned_before_kill_s: float
    """How long before the kill the earliest lost point's log call had returned (0: none lost)."""
    artifacts_checked: int
    killed_status: str
    ls_seconds: float
    """``list_experiments_sync`` of the runs on an open repository (what ``mltrack ls`` does)."""
    ls_wall_seconds: float
    """``mltrack ls`` as a command, Python start-up included (reading a server does not import mlflow)."""
    ls_runs: int
    restart_seconds: float
    cluster_start_seconds: float | None = None

    def to_json(self) -> str:
        """The figures as JSON (what ``--json`` prints)."""
        return json.dumps(asdict(self), indent=2)


def _env(cluster: Any, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_", "MLTRACK_", "MLFLOW_", "AIM_"))}
    env.update(cluster.trainer_env())
    env.update(
        {
            "ML_STORAGE_PATH": str(folder / "store"),
            "HOME": str(folder),
            "TMPDIR": str(folder / "tmp"),
            "MLTRACK_STRICT": "1",
            "MLTRACK_SYSTEM_METRICS": "0",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _start_trainer(cluster: Any, index: int, points: int, pace: float, tag: str, base: Path) -> Trainer:
    folder = base / f"trainer-{index}"
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(TRAINER), str(index), str(points), str(pace), tag],
        cwd=folder,
        env=_env(cluster, folder),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    trainer = Trainer(index, proc, folder)
    for target in (trainer.read, trainer.read_err):
        threading.Thread(target=target, daemon=True).start()
    return trainer


# mltrack's run id is the MLflow run's tag ``mltrack.run_id``; MLflow's own id is ``runs.run_uuid``.
_RUNS_OF = "SELECT run_uuid FROM tags WHERE key = 'mltrack.run_id' AND value = ANY(%s)"


def _stored_steps(cluster: Any, run_id: str) -> list[int]:
    """The steps of ``loss`` PostgreSQL holds for mltrack run ``run_id``."""
    with cluster.connect() as conn:
        rows = conn.execute(
            f"SELECT DISTINCT step FROM metrics WHERE key = 'loss' AND run_uuid IN ({_RUNS_OF}) ORDER BY step",
            ([run_id],),
        ).fetchall()
    return [int(r[0]) for r in rows]


def _count_points(cluster: Any, run_ids: list[str], *, mlflow_ids: bool = False) -> int:
    """Distinct (run, step) points of ``loss`` in PostgreSQL for these runs (mltrack's ids, or MLflow's)."""
    runs = "%s" if mlflow_ids else f"({_RUNS_OF})"
    where = "run_uuid = ANY(%s)" if mlflow_ids else f"run_uuid IN {runs}"
    with cluster.connect() as conn:
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT run_uuid, step FROM metrics WHERE key = 'loss' AND {where}) AS p",
            (run_ids,),
        ).fetchone()
    return int(row[0]) if row else 0


def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.2, detail: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            more = f": {detail()}" if detail else ""
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{more}")
        time.sleep(interval)


def run_load_test(
    cluster: Any,
    *,
    trainers: int = 16,
    points: int = 100_000,
    pace: float = 60.0,
    kill_at: float = 0.3,
    restart_at: float = 0.5,
    raw: bool = True,
    ls_command: bool = True,
    timeout: float = 1800.0,
    log: Any = print,
) -> LoadResult:
    """Run the load test against ``cluster`` (a :class:`mltrack_mlflow.cluster.Cluster`); returns its figures.

    Trainer 0 is SIGKILLed once it has logged ``kill_at`` of its points; the server is restarted
    once the others have logged ``restart_at`` of theirs on average. Each trainer takes at least
    ``pace`` seconds to log its points. ``ls_command=False`` times the listing in this process
    only (not ``mltrack ls`` as a command, which adds Python's start-up). Raises AssertionError
    naming what was wrong.
    """
    tag = f"load:{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="mltrack-load-"))
    started = time.monotonic()
    procs = [_start_trainer(cluster, i, points, pace, tag, base) for i in range(trainers)]
    try:
        victim = procs[0]
        _wait(
            lambda: victim.last_step >= points * kill_at or victim.proc.poll() is not None,
            timeout,
            "the trainer to kill to log its share",
        )
        assert victim.proc.poll() is None, (
            f"trainer 0 ended before its kill: {''.join(victim.stderr)[-3000:]}"
        )
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.killed_at = time.time()
        victim.proc.wait(10)
        log(
            f"{time.monotonic() - started:.1f} s: killed trainer 0 (pid {victim.proc.pid}) at step {victim.last_step}"
        )
        others = procs[1:]
        if others:
            _wait(
                lambda: (
                    sum(max(t.last_step, 0) for t in others) >= restart_at * points * len(others)
                    or all(t.proc.poll() is not None for t in others)
                ),
                timeout,
                "the trainers to log their share before the restart",
            )
        restart_started = time.monotonic()
        cluster.restart_mlflow()
        restart_seconds = time.monotonic() - restart_started
        log(f"{time.monotonic() - started:.1f} s: restarted mlflow server in {restart_seconds:.1f} s")
        for trainer in others:
            trainer.proc.wait(timeout)
            assert trainer.proc.returncode == 0 and trainer.done_at, (
                f"trainer {trainer.index} failed ({trainer.proc.returncode}): {''.join(trainer.stderr)[-3000:]}"
            )
        log(f"{time.monotonic() - started:.1f} s: the other trainers exited")
        time.sleep(0.5)  # the reader threads take the last lines
        run_ids = [t.run_id for t in procs]
        assert all(run_ids), "a trainer never printed its run id"
        ids = [str(r) for r in run_ids]
        survivors = [str(t.run_id) for t in others]
        required = [
            s for s, at in victim.progress if victim.killed_at and at < victim.killed_at - FLUSH_INTERVAL
        ]
        must_have = (max(required) + 1) if required else 0
        expected = points * len(survivors)
        _wait(
            lambda: _count_points(cluster, survivors) >= expected,
            timeout,
            "every point of the finished trainers to reach PostgreSQL",
            interval=2.0,
            detail=lambda: f"{_count_points(cluster, survivors):,} of {expected:,} points",
        )
        mltrack_seconds = time.monotonic() - started
        log(f"{mltrack_seconds:.1f} s: every point of the other trainers is in PostgreSQL")
        # The killed run reads CRASHED once its writer process has stored everything it was handed.
        status = _wait_status(cluster, str(victim.run_id), "CRASHED", timeout=300)
        log(f"{time.monotonic() - started:.1f} s: the killed run reads {status}")
        stored_total = _count_points(cluster, ids)
        # 3. Checks, on the stores themselves.
        for trainer in others:
            steps = _stored_steps(cluster, str(trainer.run_id))
            assert steps == list(range(points)), (
                f"trainer {trainer.index}: {points - len(steps)} points missing"
            )
        victim_steps = set(_stored_steps(cluster, str(victim.run_id)))
        lost = [s for s in range(must_have) if s not in victim_steps]
        lost_before = (
            max((victim.killed_at or 0.0) - _returned_at(victim.progress, s) for s in lost) if lost else 0.0
        )
        if lost:
            log(
                f"the killed trainer lost {len(lost)} points returned up to {lost_before:.2f} s before the kill"
            )
        artifacts_checked = _check_artifacts(cluster, procs)
        ls_wall, ls_seconds, ls_runs = _time_ls(cluster, tag, base, command=ls_command, ids=ids)
        assert set(ls_runs) == set(ids), f"`mltrack ls` listed {len(ls_runs)} of {len(ids)} runs"
        assert ls_seconds < 1.0, f"listing the {len(ids)} runs took {ls_seconds:.2f} s"
        mltrack_points = stored_total
        log(
            f"mltrack: {mltrack_points:,} points in {mltrack_seconds:.1f} s; listing {ls_seconds:.2f} s "
            f"(`mltrack ls` {ls_wall:.1f} s with start-up)"
        )
    finally:
        for trainer in procs:
            if trainer.proc.poll() is None:
                trainer.proc.kill()
                trainer.proc.wait(10)
    raw_points, raw_seconds = (0, 0.0)
    if raw:
        raw_points, raw_seconds = _raw_clients(cluster, trainers, points, tag, timeout)
        log(f"raw log_batch: {raw_points:,} points in {raw_seconds:.1f} s")
    return LoadResult(
        trainers=trainers,
        points_per_trainer=points,
        mltrack_points=mltrack_points,
        mltrack_seconds=round(mltrack_seconds, 2),
        mltrack_points_per_s=round(mltrack_points / mltrack_seconds),
        raw_points=raw_points,
        raw_seconds=round(raw_seconds, 2),
        raw_points_per_s=round(raw_points / raw_seconds) if raw_seconds else 0,
        killed_points_required=must_have,
        killed_points_stored=len(victim_steps),
        lost_points=len(lost),
        lost_returned_before_kill_s=round(lost_before, 3),
        artifacts_checked=artifacts_checked,
        killed_status=status,
        ls_seconds=round(ls_seconds, 3),
        ls_wall_seconds=round(ls_wall, 2),
        ls_runs=len(ls_runs),
        restart_seconds=round(restart_seconds, 1),
    )


def _returned_at(progress: list[tuple[int, float]], step: int) -> float:
    """When the log call of ``step`` had returned at the latest (the first progress line at or after it)."""
    return next(at for s, at in progress if s >= step)


def _check_artifacts(cluster: Any, procs: list[Trainer]) -> int:
    """Every artifact a trainer logged is an object in the bucket with the trainer's sha256."""
    s3 = cluster.s3_client()
    from mltrack_mlflow.cluster import BUCKET

    with cluster.connect() as conn:
        rows = conn.execute(
            "SELECT value, run_uuid FROM tags WHERE key = 'mltrack.run_id' AND value = ANY(%s)",
            ([str(t.run_id) for t in procs],),
        ).fetchall()
    mlflow_ids = {str(v): str(r) for v, r in rows}
    checked = 0
    for trainer in procs:
        assert len(trainer.artifacts) == 3, (
            f"trainer {trainer.index} logged {len(trainer.artifacts)} artifacts"
        )
        prefix = "artifacts/"
        keys = [
            obj["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
            for obj in page.get("Contents", [])
            if f"/{mlflow_ids[str(trainer.run_id)]}/" in obj["Key"]
        ]
        for name, digest in trainer.artifacts.items():
            matches = [k for k in keys if k.endswith("/" + name)]
            assert matches, f"trainer {trainer.index}: {name} is not in the object store (keys: {keys[:5]})"
            body = s3.get_object(Bucket=BUCKET, Key=matches[0])["Body"].read()
            assert hashlib.sha256(body).hexdigest() == digest, f"trainer {trainer.index}: {name} differs"
            checked += 1
    return checked


def _wait_status(cluster: Any, run_id: str, want: str, timeout: float) -> str:
    import mltrack

    seen = ""
    deadline = time.monotonic() + timeout
    with mltrack.open_repository("mlflow", tracking_uri=cluster.tracking_uri, must_exist=True) as repo:
        while time.monotonic() < deadline:
            seen = repo.get_experiment_sync(run_id).status.name
            if seen == want:
                return seen
            time.sleep(0.5)
    raise AssertionError(f"run {run_id} reads {seen}, not {want}")


def _time_ls(
    cluster: Any, tag: str, base: Path, *, command: bool = True, ids: list[str] | None = None
) -> tuple[float, float, list[str]]:
    """How long listing the runs takes: (``mltrack ls`` wall seconds, the listing alone, run ids).

    The command's wall time includes starting Python (not importing mlflow: a server is read
    through its REST API); the listing alone is ``list_experiments_sync`` on an open
    repository, best of 3.
    """
    import mltrack

    wall = 0.0
    if command:
        argv = [str(Path(sys.executable).parent / "mltrack"), "ls", "--tag", tag, "--json"]
        begun = time.monotonic()
        proc = subprocess.run(argv, env=_env(cluster, base), capture_output=True, text=True, timeout=120)
        wall = time.monotonic() - begun
        assert proc.returncode == 0, proc.stderr[-2000:]
        ids = [row["id"] for row in json.loads(proc.stdout)]
    assert ids is not None
    best = float("inf")
    with mltrack.open_repository("mlflow", tracking_uri=cluster.tracking_uri, must_exist=True) as repo:
        for _ in range(3):
            begun = time.monotonic()
            listed = repo.list_experiments_sync(tags=[tag])
            best = min(best, time.monotonic() - begun)
            assert sorted(r.experiment_id for r in listed) == sorted(ids)
    return wall, best, ids


def _raw_clients(cluster: Any, clients: int, points: int, tag: str, timeout: float) -> tuple[int, float]:
    """``clients`` raw MlflowClient processes logging ``points`` each with log_batch: (points, seconds)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_", "MLTRACK_", "MLFLOW_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    # Imports first, then all at once: the figure is the server's, not the interpreters' start-up.
    code = "import mlflow.tracking, mlflow.entities, sys; sys.stdin.readline()\n" + textwrap.dedent(
        RAW_CLIENT
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, cluster.tracking_uri, str(points), tag],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    time.sleep(8)  # let every client import mlflow
    started = time.monotonic()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    run_ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-2000:]
        words = out.split()
        run_ids.append(words[words.index("raw") + 1])
    seconds = time.monotonic() - started
    return _count_points(cluster, run_ids, mlflow_ids=True), seconds


def write_results(result: LoadResult, path: Path = RESULTS) -> None:
    """Put the figures into ``RESULTS.md`` between the load-test markers (added at its end if absent)."""
    ratio = result.mltrack_points_per_s / result.raw_points_per_s if result.raw_points_per_s else float("nan")
    lost_age = (
        f"a lost point had returned at most {result.lost_returned_before_kill_s} s before the kill"
        if result.lost_points
        else "no point was lost"
    )
    section = textwrap.dedent(
        f"""\
        {BEGIN_MARK}
        ## Load test: {result.trainers} trainers into one MLflow server on PostgreSQL + S3

        `nox -s load` (benchmarks/load_test.py), {time.strftime("%Y-%m-%d")}, this 2-core machine, loopback:
        PostgreSQL 15, SeaweedFS S3, `mlflow server` with 2 workers. {result.trainers} trainer processes,
        each with its own environment and folder, log {result.points_per_trainer:,} points and 3 artifacts
        each through mltrack at once; trainer 0 is SIGKILLed at 30% and the server restarted once
        (it took {result.restart_seconds} s to answer again).

        | | points stored | seconds | points/s |
        |---|---:|---:|---:|
        | mltrack, {result.trainers} trainers (kill + server restart included) | {result.mltrack_points:,} | {result.mltrack_seconds} | {result.mltrack_points_per_s:,} |
        | raw `MlflowClient.log_batch`, {result.trainers} clients, 1,000 points a call | {result.raw_points:,} | {result.raw_seconds} | {result.raw_points_per_s:,} |

        mltrack reached {ratio:.2f}x the raw clients' throughput. Lost: {result.lost_points} of the {result.killed_points_required:,} points the killed
        trainer's calls returned more than the flush interval (0.1 s) before the kill ({result.killed_points_stored:,} of
        its points are stored; {lost_age}); every point of the other trainers is in PostgreSQL; {result.artifacts_checked}
        artifacts are in the bucket with their sha256; the killed run reads {result.killed_status};
        `mltrack ls` listed all {result.ls_runs} runs: the listing took {result.ls_seconds} s, the whole
        command {result.ls_wall_seconds} s (Python start-up included).
        {END_MARK}
        """
    )
    text = path.read_text() if path.exists() else ""
    if BEGIN_MARK in text and END_MARK in text:
        head, rest = text.split(BEGIN_MARK, 1)
        tail = rest.split(END_MARK, 1)[1]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Start a cluster, run the load test, stop the cluster; ``--write`` updates RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", type=int, default=16)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--pace", type=float, default=60.0, help="seconds each trainer takes at least")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw log_batch clients")
    parser.add_argument("--write", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    from mltrack_mlflow.cluster import start_cluster

    folder = Path(tempfile.mkdtemp(prefix="mltrack-load-cluster-"))
    begun = time.monotonic()
    with start_cluster(folder, workers=2) as cluster:
        start_seconds = time.monotonic() - begun
        print(f"cluster up in {start_seconds:.1f} s: {cluster.tracking_uri}", flush=True)
        result = run_load_test(
            cluster, trainers=args.trainers, points=args.points, pace=args.pace, raw=not args.no_raw
        )
        result.cluster_start_seconds = round(start_seconds, 1)
    print(result.to_json())
    if args.write:
        write_results(result)
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
