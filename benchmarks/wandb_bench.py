"""mltrack on its ``wandb`` backend against a raw ``wandb.log`` loop, both offline, in the same run.

Each contender logs one metric, ``loss``, one point per step, in a fresh Python process;
contenders alternate and repeat, and the table reports medians. Three numbers per contender:

* calling-thread cost per point: time spent in the log calls divided by the points logged;
* durable throughput: points divided by the time from the first log call until the run is
  ended (``run.finish()``) with every point stored;
* the time from the last log call to the end of the process (what a job scheduler waits for;
  W&B users report offline jobs that never exit, wandb#919).

Every stored run is then counted by a fresh process with mltrack's W&B reader (W&B's own
offline runs read too), and a contender whose points do not all read back is flagged. Sizes
differ because the speeds do (``wandb.log`` takes milliseconds a call here). ``run.py`` can
call :func:`bench_wandb`; alone,

    python benchmarks/wandb_bench.py [--quick] [--rounds 3]

prints the rows and the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Protocol

__all__ = ["bench_wandb", "main"]


class ResultSink(Protocol):
    """What ``run.py``'s ``Results`` offers: goal rows and extra markdown sections."""

    sections: list[str]

    def goal(self, number: str, what: str, measured: str, target: str, met: bool | None) -> None:
        """Record one row of the goals table."""


_PRELUDE = """
import json, os, sys, time
def emit(**kw): print("RESULT " + json.dumps(kw), flush=True)
N = int(os.environ["N"])
WHERE = os.environ["BENCH_WHERE"]
def value(i): return 0.5 + i * 1e-6
"""

RAW_WANDB = """
import wandb
run = wandb.init(project="bench-wandb", dir=WHERE, mode="offline")
t0 = time.perf_counter()
for i in range(N):
    wandb.log({"loss": value(i)}, step=i)
t1 = time.perf_counter()
last = time.time()
run.finish()
t2 = time.perf_counter()
emit(calling_s=t1 - t0, durable_s=t2 - t0, last_log=last, run=run.id)
"""

# ML_TRACKING_BACKEND=wandb and ML_STORAGE_PATH come from the environment, as a user sets them.
MLTRACK_WANDB = """
import mltrack
run = mltrack.start_run("bench-wandb")
t0 = time.perf_counter()
for i in range(N):
    run.log_metric("loss", value(i), step=i)
t1 = time.perf_counter()
last = time.time()
run.finish()
t2 = time.perf_counter()
emit(calling_s=t1 - t0, durable_s=t2 - t0, last_log=last, run=run.id)
"""

COUNT = """
from mltrack.factory import open_repository
from mltrack_wandb.backend import mltrack_id
counts = []
for where, run in json.loads(os.environ["CHECKS"]):
    with open_repository("wandb", must_exist=True, root=where) as repo:
        history = repo.get_experiment_metrics_sync(mltrack_id(run), names=["loss"])
        counts.append(len(history.series("loss").values) if history.names else 0)
emit(counts=counts)
"""

# Nothing may reach a network or report usage; the parent's tracking settings do not leak in.
_QUIET = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_ERROR_REPORTING": "false",
    "WANDB_X_DISABLE_STATS": "true",
    "DO_NOT_TRACK": "true",
}
_INHERITED_PREFIXES = ("ML_", "MLTRACK_", "AIM_", "MLFLOW_", "WANDB_")


def _run(code: str, where: Path, env: dict[str, str], timeout: float = 900) -> dict[str, Any]:
    """Run a workload in a fresh interpreter; its result, plus ``exit_after_last_log_s``."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    full.update(_QUIET, **env, BENCH_WHERE=str(where))
    proc = subprocess.Popen(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full,
    )
    out, err = proc.communicate(timeout=timeout)
    ended = time.time()
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            if "last_log" in result:
                result["exit_after_last_log_s"] = ended - result["last_log"]
            return result
    raise RuntimeError(f"workload failed ({proc.returncode}):\n{err[-3000:]}")


def _measure(root: Path, rounds: int, quick: bool) -> dict[str, list[dict[str, Any]]]:
    sizes = {"wandb": 500 if quick else 2_000, "mltrack": 100_000 if quick else 1_000_000}
    found: dict[str, list[dict[str, Any]]] = {"wandb": [], "mltrack": []}
    for round_ in range(rounds):
        order = ["wandb", "mltrack"] if round_ % 2 == 0 else ["mltrack", "wandb"]
        for key in order:
            where = root / f"{key}-{round_}"
            where.mkdir(parents=True)
            env = {"N": str(sizes[key])}
            if key == "mltrack":
                env.update(ML_TRACKING_BACKEND="wandb", ML_STORAGE_PATH=str(where))
                result = _run(MLTRACK_WANDB, where, env)
            else:
                result = _run(RAW_WANDB, where, env)
            result.update(key=key, n=sizes[key], where=str(where))
            found[key].append(result)
    checks = [[r["where"], r["run"]] for rs in found.values() for r in rs]
    counts = _run(COUNT, root, {"N": "0", "CHECKS": json.dumps(checks)})["counts"]
    for result, count in zip([r for rs in found.values() for r in rs], counts):
        result["read_back"] = count
    return found


def _table(found: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, dict[str, float]]]:
    medians: dict[str, dict[str, float]] = {}
    lines = [
        "| contender | points | calling-thread cost per point | durable throughput | last log call to process exit | all points read back |",
        "|---|---|---|---|---|---|",
    ]
    labels = {"wandb": "raw `wandb.log` loop (offline)", "mltrack": "mltrack `log_metric` on `wandb`"}
    for key, results in found.items():
        per_point = statistics.median(r["calling_s"] / r["n"] for r in results)
        throughput = statistics.median(r["n"] / r["durable_s"] for r in results)
        exit_s = statistics.median(r["exit_after_last_log_s"] for r in results)
        complete = all(r["read_back"] == r["n"] for r in results)
        medians[key] = {"per_point": per_point, "throughput": throughput, "exit": exit_s}
        lines.append(
            f"| {labels[key]} | {results[0]['n']:,} | {per_point * 1e6:,.2f} µs | {throughput:,.0f} points/s "
            f"| {exit_s:.2f} s | {'yes' if complete else 'NO'} |"
        )
    return "\n".join(lines), medians


def bench_wandb(results: ResultSink, root: Path, repeats: int, quick: bool) -> None:
    """Measure both contenders ``repeats`` times, alternating; add the goal row and the table."""
    found = _measure(root / "wandb", repeats, quick)
    table, medians = _table(found)
    ratio = medians["wandb"]["per_point"] / medians["mltrack"]["per_point"]
    results.goal(
        "W&B",
        "calling-thread cost per point, mltrack on `wandb` vs `wandb.log` (offline)",
        f"{medians['mltrack']['per_point'] * 1e6:.2f} µs vs {medians['wandb']['per_point'] * 1e6:,.0f} µs = 1/{ratio:,.0f}",
        "<= 1/1000",
        ratio >= 1000,
    )
    results.sections.append("## mltrack on W&B vs `wandb.log`\n\n" + table + "\n")


class _Printed:
    """A ``ResultSink`` that prints."""

    def __init__(self) -> None:
        self.sections: list[str] = []

    def goal(self, number: str, what: str, measured: str, target: str, met: bool | None) -> None:
        print(f"{number}: {what}: {measured} (target {target}: {'met' if met else 'NOT met'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each contender")
    args = parser.parse_args()
    sink = _Printed()
    with tempfile.TemporaryDirectory(prefix="mltrack-bench-wandb-") as tmp:
        bench_wandb(sink, Path(tmp), args.rounds, args.quick)
    print("\n".join(sink.sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
