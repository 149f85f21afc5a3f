"""mltrack against its peers, side by side: MLflow (SQLite and file stores, sync and async) and
TensorBoard writers (``torch.utils.tensorboard`` and tensorboardX).

Every contender logs one metric, ``loss``, one point per step, in a fresh Python process;
contenders are interleaved (the order rotates each round) and repeated, and the tables report
medians. Two numbers per contender:

* calling-thread cost per point: time spent in the log calls divided by the points logged;
* durable throughput: points divided by the time from the first log call until the run is
  ended (``finish``, ``end_run``, ``set_terminated``, ``close``) with every point stored. Each
  stored run is read back by a fresh process afterwards, and a contender whose points do not
  all read back is flagged.

Sizes differ because the contenders' speeds differ by four orders of magnitude (an MLflow
``log_metric`` on SQLite is a committed transaction of several milliseconds): each logs enough
points to take a second or more to store. ``run.py`` calls :func:`bench_peers`; alone,

    python benchmarks/peers.py [--quick] [--rounds 3]

prints the same rows and table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = ["bench_peers", "main"]


class ResultSink(Protocol):
    """What ``run.py``'s ``Results`` offers: goal rows and extra markdown sections."""

    sections: list[str]

    def goal(self, number: str, what: str, measured: str, target: str, met: bool | None) -> None:
        """Record one row of the goals table."""


# --- workloads: each runs as `python -c` in a fresh process and prints one RESULT line -------

_PRELUDE = """
import json, os, sys, time
def emit(**kw): print("RESULT " + json.dumps(kw), flush=True)
N = int(os.environ.get("N", "0"))
WHERE = os.environ.get("BENCH_WHERE", "")
def value(i): return 0.5 + i * 1e-6
"""

PROBE = """
import importlib.util
def spec(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
found = {
    "mlflow": spec("mlflow"),
    "torch_tensorboard": spec("torch") and spec("tensorboard"),
    "tensorboardX": spec("tensorboardX"),
    "tensorboard": spec("tensorboard"),
    "mltrack_aim": spec("mltrack_aim"),
    "mltrack_mlflow": False,
}
if spec("mltrack_mlflow"):
    import warnings
    warnings.simplefilter("ignore")
    from mltrack.plugins import get_plugin_host
    found["mltrack_mlflow"] = "mlflow" in get_plugin_host().backends()
emit(**found)
"""

# ML_TRACKING_BACKEND=mlflow and ML_STORAGE_PATH come from the environment, as a user sets them.
MLTRACK_ENV = """
import mltrack
run = mltrack.start_run("bench-peers")
t0 = time.perf_counter()
for i in range(N):
    run.log_metric("loss", value(i), step=i)
t1 = time.perf_counter()
run.finish()
t2 = time.perf_counter()
emit(calling_s=t1 - t0, durable_s=t2 - t0, run=run.id)
"""

# The same loop on Aim, configured in code.
MLTRACK_AIM = """
import mltrack
mltrack.configure_backend("aim", repo_path=WHERE)
""" + MLTRACK_ENV.replace("import mltrack\n", "", 1)

MLFLOW_LOOP = """
import mlflow
mlflow.set_tracking_uri(WHERE)
mlflow.set_experiment("bench-peers")
run = mlflow.start_run()
synchronous = os.environ.get("ASYNC") != "1"
t0 = time.perf_counter()
for i in range(N):
    mlflow.log_metric("loss", value(i), step=i, synchronous=synchronous)
t1 = time.perf_counter()
mlflow.end_run()  # with async logging: drains the queue before returning
t2 = time.perf_counter()
emit(calling_s=t1 - t0, durable_s=t2 - t0, run=run.info.run_id)
"""

MLFLOW_BATCH = """
from mlflow import MlflowClient
from mlflow.entities import Metric
client = MlflowClient(WHERE)
exp = client.get_experiment_by_name("bench-peers")
exp_id = exp.experiment_id if exp else client.create_experiment("bench-peers")
run_id = client.create_run(exp_id).info.run_id
t0 = time.perf_counter()
for start in range(0, N, 1000):
    batch = [Metric("loss", value(i), int(time.time() * 1000), i) for i in range(start, min(N, start + 1000))]
    client.log_batch(run_id, metrics=batch)
t1 = time.perf_counter()
client.set_terminated(run_id)
t2 = time.perf_counter()
emit(calling_s=t1 - t0, durable_s=t2 - t0, run=run_id)
"""

TENSORBOARD = """
if os.environ["WRITER"] == "torch":
    from torch.utils.tensorboard import SummaryWriter
else:
    from tensorboardX import SummaryWriter
writer = SummaryWriter(log_dir=WHERE)
t0 = time.perf_counter()
for i in range(N):
    writer.add_scalar("loss", value(i), global_step=i)
t1 = time.perf_counter()
writer.close()
t2 = time.perf_counter()
emit(calling_s=t1 - t0, durable_s=t2 - t0, run=WHERE)
"""

# Read-back checks, one process per kind of store: {"checks": [[where, run], ...]} in CHECKS.
COUNT_MLTRACK = """
import mltrack
from mltrack.factory import experiment_repository
checks = json.loads(os.environ["CHECKS"])
if os.environ.get("BACKEND") == "aim":
    mltrack.configure_backend("aim", repo_path=checks[0][0])
repo = experiment_repository()
counts = []
for _, run in checks:
    counts.append(len(repo.get_experiment_metrics_sync(run, names=["loss"]).series("loss").values))
emit(counts=counts)
"""

COUNT_MLFLOW = """
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
from mlflow import MlflowClient
counts = []
for where, run in json.loads(os.environ["CHECKS"]):
    counts.append(len(MlflowClient(where).get_metric_history(run, "loss")))
emit(counts=counts)
"""

COUNT_TENSORBOARD = """
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
counts = []
for where, _ in json.loads(os.environ["CHECKS"]):
    acc = EventAccumulator(where, size_guidance={SCALARS: 0})  # 0: keep every point
    acc.Reload()
    counts.append(len(acc.Scalars("loss")) if "loss" in acc.Tags()[SCALARS] else 0)
emit(counts=counts)
"""

INIT_AIM = """
from mltrack_aim.store import ensure_repo
ensure_repo(WHERE)
emit(done=True)
"""

# Settings of the parent's environment that would change what a contender does.
_INHERITED_PREFIXES = ("ML_", "MLTRACK_", "AIM_", "MLFLOW_")
# No contender may spend time on usage reporting (the network is closed here anyway).
_QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "TF_CPP_MIN_LOG_LEVEL": "3"}


class WorkloadError(RuntimeError):
    """A workload process failed or printed no result."""


def run_fresh(source: str, env: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """Run ``source`` in a fresh interpreter with exactly ``env``; return the dict it printed as ``RESULT {...}``."""
    proc = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, env=dict(env), timeout=timeout
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])  # type: ignore[no-any-return]
    raise WorkloadError(f"workload failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def run_workload(
    code: str, where: str, env: Mapping[str, object] | None = None, timeout: float = 600
) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter with ``env`` added and return the dict it emitted."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    full_env.update(_QUIET)
    full_env.update({k: str(v) for k, v in (env or {}).items()}, BENCH_WHERE=where)
    return run_fresh(_PRELUDE + textwrap.dedent(code), full_env, timeout)


# --- contenders --------------------------------------------------------------------------


@dataclass
class Contender:
    """One way of logging points, with where it stores them and how they are read back."""

    key: str
    label: str
    code: str
    points: int
    where: Callable[[int], str]
    """Store location for round ``n`` (a repository, a tracking URI, a log directory)."""
    count_code: str
    requires: str
    """The probe key that must be true for this contender to run."""
    env: Mapping[str, str] = field(default_factory=dict)
    count_env: Mapping[str, str] = field(default_factory=dict)
    group: str = "peers"
    """``peers`` (compared with mltrack on Aim) or ``mlflow`` (with mltrack on MLflow)."""
    calling_us: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    stored: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    available: bool = True

    def measure(self, round_no: int) -> None:
        """Run one round in a fresh process; a failure is recorded, not raised."""
        where = self.where(round_no)
        try:
            out = run_workload(self.code, where, {"N": self.points, **self.env})
        except (WorkloadError, subprocess.TimeoutExpired) as exc:
            self.errors.append(_last_line(exc))
            return
        self.calling_us.append(out["calling_s"] / self.points * 1e6)
        self.throughput.append(self.points / out["durable_s"])
        self.stored.append((where, out["run"]))

    @property
    def ok(self) -> bool:
        """Measured at least once, every stored point read back."""
        return self.available and bool(self.calling_us) and not self.lost

    def median_calling(self) -> float:
        """Median calling-thread µs per point."""
        return statistics.median(self.calling_us)

    def median_throughput(self) -> float:
        """Median durable points per second."""
        return statistics.median(self.throughput)


def _contenders(root: Path, quick: bool) -> list[Contender]:
    """Every contender with its size; the first is mltrack, the reference of every ratio."""

    def size(full: int, small: int) -> int:
        return small if quick else full

    sqlite = f"sqlite:///{root / 'mlflow-sqlite' / 'mlflow.db'}"
    files = (root / "mlflow-files").as_uri()
    file_env = {"MLFLOW_ALLOW_FILE_STORE": "true"}
    async_env = {"ASYNC": "1", "MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS": "1"}
    mlflow_backend = root / "mltrack-mlflow"
    return [
        Contender(
            "mltrack",
            "mltrack `run.log_metric` (Aim backend, writer process)",
            MLTRACK_AIM,
            size(500_000, 50_000),
            lambda _: str(root / "aim"),
            COUNT_MLTRACK,
            "mltrack_aim",
            count_env={"BACKEND": "aim"},
        ),
        Contender(
            "mlflow-sqlite-loop",
            "MLflow SQLite, `mlflow.log_metric` loop",
            MLFLOW_LOOP,
            size(300, 100),
            lambda _: sqlite,
            COUNT_MLFLOW,
            "mlflow",
        ),
        Contender(
            "mlflow-sqlite-batch",
            "MLflow SQLite, `MlflowClient.log_batch` (1000 a call)",
            MLFLOW_BATCH,
            size(20_000, 5_000),
            lambda _: sqlite,
            COUNT_MLFLOW,
            "mlflow",
        ),
        Contender(
            "mlflow-sqlite-async",
            "MLflow SQLite, `log_metric(synchronous=False)`, 1 s buffering",
            MLFLOW_LOOP,
            size(5_000, 2_000),
            lambda _: sqlite,
            COUNT_MLFLOW,
            "mlflow",
            env=async_env,
        ),
        Contender(
            "mlflow-file-loop",
            "MLflow file store, `mlflow.log_metric` loop",
            MLFLOW_LOOP,
            size(2_000, 500),
            lambda _: files,
            COUNT_MLFLOW,
            "mlflow",
            env=file_env,
        ),
        Contender(
            "mlflow-file-batch",
            "MLflow file store, `MlflowClient.log_batch` (1000 a call)",
            MLFLOW_BATCH,
            size(20_000, 5_000),
            lambda _: files,
            COUNT_MLFLOW,
            "mlflow",
            env=file_env,
        ),
        Contender(
            "mlflow-file-async",
            "MLflow file store, `log_metric(synchronous=False)`, 1 s buffering",
            MLFLOW_LOOP,
            size(5_000, 2_000),
            lambda _: files,
            COUNT_MLFLOW,
            "mlflow",
            env={**file_env, **async_env},
        ),
        Contender(
            "tb-torch",
            "TensorBoard, `torch.utils.tensorboard.SummaryWriter.add_scalar`",
            TENSORBOARD,
            size(30_000, 5_000),
            lambda n: str(root / "tb-torch" / f"round{n}"),
            COUNT_TENSORBOARD,
            "torch_tensorboard",
            env={"WRITER": "torch"},
        ),
        Contender(
            "tb-x",
            "TensorBoard, `tensorboardX.SummaryWriter.add_scalar`",
            TENSORBOARD,
            size(30_000, 5_000),
            lambda n: str(root / "tb-x" / f"round{n}"),
            COUNT_TENSORBOARD,
            "tensorboardX",
            env={"WRITER": "tensorboardX"},
        ),
        Contender(
            "mltrack-mlflow",
            "mltrack `run.log_metric` (MLflow backend, `ML_TRACKING_BACKEND=mlflow`)",
            MLTRACK_ENV,
            size(20_000, 5_000),
            lambda _: str(mlflow_backend),
            COUNT_MLTRACK,
            "mltrack_mlflow",
            env={"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(mlflow_backend)},
            count_env={"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(mlflow_backend)},
            group="mlflow",
        ),
    ]


# --- the report --------------------------------------------------------------------------


def _versions() -> str:
    names = ("mlflow", "tensorboard", "tensorboardX", "torch", "aim")
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} not installed")
    return ", ".join(found)


def _times(ratio: float) -> str:
    """A ratio as a readable factor: 2,921x, 35x, 1.4x, 1/4.6, 1/386."""
    if ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio >= 10:
        return f"{ratio:.0f}x"
    if ratio >= 1:
        return f"{ratio:.1f}x"
    inverse = 1 / ratio
    return f"1/{inverse:.1f}" if inverse < 10 else f"1/{inverse:,.0f}"


def _cell_us(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.2f}"


def _status(c: Contender) -> str | None:
    """Why a contender has no numbers, or None when it has them."""
    if not c.available:
        return "not installed"
    if not c.calling_us:
        return "failed: " + (c.errors[-1] if c.errors else "no result")
    return None


def _notes(c: Contender) -> str:
    notes = []
    if c.errors:
        notes.append(f"{len(c.errors)} of {len(c.errors) + len(c.calling_us)} rounds failed")
    if c.lost:
        notes.append("NOT all stored: " + "; ".join(sorted(set(c.lost))))
    return "; ".join(notes)


def _table(reference: Contender, rows: Iterable[Contender], ref_name: str) -> list[str]:
    """Markdown rows: points, cost and throughput with their ratios to ``reference``."""
    ref_cost, ref_tp = reference.median_calling(), reference.median_throughput()
    lines = [
        f"| contender | points | calling-thread µs/point | cost vs {ref_name} "
        f"| durable points/s | throughput vs {ref_name} | |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for c in rows:
        status = _status(c)
        if status is not None:
            lines.append(f"| {c.label} | {c.points:,} | {status} | | | | |")
            continue
        cost, tp = c.median_calling(), c.median_throughput()
        lines.append(
            f"| {c.label} | {c.points:,} | {_cell_us(cost)} | {_times(cost / ref_cost)} "
            f"| {tp:,.0f} | {_times(tp / ref_tp)} | {_notes(c)} |"
        )
    return lines


def _report(results: ResultSink, contenders: list[Contender], rounds: int) -> None:
    by_key = {c.key: c for c in contenders}
    ml = by_key["mltrack"]
    peers = [c for c in contenders if c.group == "peers" and c is not ml]
    if not ml.ok:
        why = _status(ml) or _notes(ml)
        results.goal(
            "8", "calling-thread cost per point vs every peer", f"mltrack: {why}", "beat every one", False
        )
        results.sections.append("\n## Peers side by side\n\nmltrack itself failed: " + why)
        _report_mlflow_backend(results, by_key)
        return
    measured = [c for c in peers if _status(c) is None]
    missing = [c.label for c in peers if _status(c) is not None]
    lines = [
        "\n## Peers side by side",
        "",
        f"{rounds} rounds, every contender in a fresh process, order rotated each round; medians. "
        "Calling-thread cost: time in the log calls / points. Durable throughput: points / time "
        "from the first log call until the run's end call returned (`finish`, `end_run`, "
        "`set_terminated`, `close`); every stored run was then read back by a fresh process "
        "(mltrack's repository, `MlflowClient.get_metric_history`, TensorBoard's "
        "`EventAccumulator`). Ratios are the contender's number over mltrack's: a cost of "
        "100x is 100 times mltrack's cost; a throughput of 1/100 is a hundredth of mltrack's. "
        "mltrack's durable time includes starting its writer process (which imports the store), "
        "done by the others before their first log call: a small share of a long run, a large "
        "one of a short run.",
        f"Versions: {_versions()}.",
        "",
        *_table(ml, [ml, *peers], "mltrack"),
    ]
    if measured:
        cheapest = min(measured, key=Contender.median_calling)
        beaten = all(ml.median_calling() < c.median_calling() for c in measured)
        fastest = max(measured, key=Contender.median_throughput)
        results.goal(
            "8",
            f"calling-thread cost per point vs every peer ({len(measured)} measured: MLflow, TensorBoard)",
            f"{ml.median_calling():.2f} µs vs cheapest peer {cheapest.median_calling():.1f} µs "
            f"({cheapest.key}) = 1/{cheapest.median_calling() / ml.median_calling():,.0f}; durable "
            f"{ml.median_throughput():,.0f} points/s vs best peer {fastest.median_throughput():,.0f} "
            f"({fastest.key}) = {ml.median_throughput() / fastest.median_throughput():.1f}x"
            + (f"; not measured: {len(missing)}" if missing else ""),
            "beat every one",
            beaten and not missing,
        )
    else:
        results.goal(
            "8", "calling-thread cost per point vs every peer", "no peer installed", "beat every one", None
        )
    results.sections.append("\n".join(lines))
    _report_mlflow_backend(results, by_key)


def _report_mlflow_backend(results: ResultSink, by_key: Mapping[str, Contender]) -> None:
    ours = by_key["mltrack-mlflow"]
    raw = [by_key["mlflow-sqlite-loop"], by_key["mlflow-sqlite-batch"]]
    what = "mltrack on its MLflow backend vs raw MLflow (SQLite), `log_metric` loop and `log_batch`"
    status = _status(ours)
    if status is None and not all(r.ok for r in raw):
        status = "raw MLflow not measured"
    if status is not None:
        why = "mltrack-mlflow (a registered `mlflow` backend) is " if status == "not installed" else ""
        results.goal("8b", what, status, "report", None)
        results.sections.append(f"\n## mltrack on MLflow vs raw MLflow\n\n{why}{status}.")
        return
    ratios = [
        (r, ours.median_calling() / r.median_calling(), ours.median_throughput() / r.median_throughput())
        for r in raw
    ]
    parts = [
        f"vs {r.key.removeprefix('mlflow-sqlite-')}: cost {_times(c)}, throughput {_times(t)}"
        for r, c, t in ratios
    ]
    results.goal("8b", what, "; ".join(parts) + _suffix(ours), "report", None)
    lines = [
        "\n## mltrack on MLflow vs raw MLflow",
        "",
        "Same rounds as above, all on SQLite (mltrack's MLflow backend in its default store, "
        "`sqlite:///<ML_STORAGE_PATH>/mlflow.db`).",
        "",
        "| contender | points | calling-thread µs/point | durable points/s | |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {c.label} | {c.points:,} | {_cell_us(c.median_calling())} "
            f"| {c.median_throughput():,.0f} | {_notes(c)} |"
            for c in [ours, *raw]
        ),
        "",
        "| mltrack on MLflow over raw MLflow's | calling-thread cost | durable throughput |",
        "|---|---:|---:|",
        *(f"| {r.label.removeprefix('MLflow SQLite, ')} | {_times(c)} | {_times(t)} |" for r, c, t in ratios),
    ]
    results.sections.append("\n".join(lines))


def _suffix(c: Contender) -> str:
    notes = _notes(c)
    return f" ({notes})" if notes else ""


def bench_peers(results: ResultSink, root: Path, repeats: int, quick: bool) -> None:
    """Measure every contender ``repeats`` times, interleaved; add goal 8 and the tables."""
    root = root / "peers"
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    found = run_workload(PROBE, "")
    contenders = _contenders(root, quick)
    for c in contenders:
        c.available = bool(found.get(c.requires))
    running = [c for c in contenders if c.available]
    if _needs(running, "mltrack_aim"):
        (root / "aim").mkdir()
        run_workload(INIT_AIM, str(root / "aim"))
    for n in range(repeats):
        shift = n % len(running) if running else 0
        for c in running[shift:] + running[:shift]:
            t = time.monotonic()
            c.measure(n)
            print(f"  peers round {n + 1}/{repeats}: {c.key} {time.monotonic() - t:.1f} s", flush=True)
    t = time.monotonic()
    _read_back(running)
    print(f"  peers read-back: {time.monotonic() - t:.1f} s", flush=True)
    _report(results, contenders, repeats)
    results.sections[-1] += f"\n\nPeers section wall time: {time.monotonic() - started:.0f} s."


def _read_back(contenders: Iterable[Contender]) -> None:
    """Read every stored run back, one fresh process per kind of store; record what is short."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Contender]] = {}
    for c in contenders:
        if c.stored:
            groups.setdefault((c.count_code, tuple(sorted(c.count_env.items()))), []).append(c)
    for (code, env), members in groups.items():
        checks = [check for c in members for check in c.stored]
        try:
            counts = iter(run_workload(code, "", {"CHECKS": json.dumps(checks), **dict(env)})["counts"])
        except (WorkloadError, subprocess.TimeoutExpired) as exc:
            for c in members:
                c.lost.append(f"read-back failed: {_last_line(exc)}")
            continue
        for c in members:
            for _ in c.stored:
                count = next(counts)
                if count != c.points:
                    c.lost.append(f"{count:,} of {c.points:,} points read back")


def _last_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else repr(exc)


def _needs(contenders: Iterable[Contender], requires: str) -> bool:
    """Whether any of ``contenders`` needs the probe key ``requires``."""
    return any(c.requires == requires for c in contenders)


class _Printed:
    """A stand-alone result sink: prints the rows and sections."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.rows: list[str] = []

    def goal(self, number: str, what: str, measured: str, target: str, met: bool | None) -> None:
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        self.rows.append(f"| {number} | {what} | {measured} | {target} | {verdict} |")


def main(argv: list[str] | None = None) -> int:
    """Run the peers benchmark alone and print its markdown."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    printed = _Printed()
    with tempfile.TemporaryDirectory(prefix="mltrack-peers-") as tmp:
        bench_peers(printed, Path(tmp), args.rounds, args.quick)
    print("\n".join(printed.rows))
    print()
    print("\n\n".join(printed.sections))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
