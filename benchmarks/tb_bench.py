"""mltrack on its tensorboard backend against raw tensorboardX, side by side in one run.

Three goals, each measured in fresh processes, contenders interleaved, medians reported:

* calling-thread cost per point: mltrack's ``log_metric`` vs tensorboardX's ``add_scalar``
  (the ``crc32c`` package installed, as mltrack-tensorboard installs it): <= 1/30;
* durable throughput: points divided by the time from the first log call until ``finish`` /
  ``close`` returned, every point then read back by a fresh process: >= 1x;
* reading a 1,000,000-point metric: mltrack's repository on its own run vs TensorBoard's
  ``EventAccumulator`` (every point kept) on tensorboardX's run: <= 1x.

``run.py`` calls :func:`bench_tensorboard`; alone, ``python benchmarks/tb_bench.py [--quick]``
prints the same rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import peers

__all__ = ["bench_tensorboard", "main"]

MLTRACK_TB = """
import mltrack
mltrack.configure_backend("tensorboard", logdir=WHERE)
run = mltrack.start_run("bench-tensorboard")
t0 = time.perf_counter()
for i in range(N):
    run.log_metric("loss", value(i), step=i)
t1 = time.perf_counter()
run.finish()
t2 = time.perf_counter()
emit(calling_s=t1 - t0, durable_s=t2 - t0, run=run.id, tb_imported="tensorboard" in sys.modules)
"""

TENSORBOARDX = """
import crc32c  # tensorboardX's checksums in C, as with mltrack-tensorboard installed
from tensorboardX import SummaryWriter
writer = SummaryWriter(log_dir=WHERE)
t0 = time.perf_counter()
for i in range(N):
    writer.add_scalar("loss", value(i), global_step=i)
t1 = time.perf_counter()
writer.close()
t2 = time.perf_counter()
emit(calling_s=t1 - t0, durable_s=t2 - t0)
"""

READ_MLTRACK = """
from mltrack.factory import open_repository
with open_repository("tensorboard", must_exist=True, logdir=WHERE) as repo:
    t0 = time.perf_counter()
    series = repo.get_experiment_metrics_sync(os.environ["RUN"], names=["loss"]).series("loss")
    t1 = time.perf_counter()
emit(read_s=t1 - t0, points=len(series.values), last=float(series.values[-1]))
"""

READ_EVENT_ACCUMULATOR = """
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
t0 = time.perf_counter()
acc = EventAccumulator(WHERE, size_guidance={SCALARS: 0})  # 0: keep every point
acc.Reload()
points = acc.Scalars("loss")
t1 = time.perf_counter()
emit(read_s=t1 - t0, points=len(points))
"""


def _median(values: list[float]) -> float:
    return statistics.median(values)


def bench_tensorboard(results: Any, root: Path, repeats: int, quick: bool) -> None:
    """Measure the three goals, adding goal rows and a section to ``results`` (run.py's Results)."""
    n_ml = 100_000 if quick else 1_000_000
    n_tbx = 20_000 if quick else 200_000  # ~30 µs a point: enough for several seconds of work
    ml_cost, tbx_cost, ml_tp, tbx_tp, ml_read, ea_read = [], [], [], [], [], []
    imported = False
    for round_ in range(repeats):
        ml_dir = root / f"tb-mltrack-{round_}"
        tbx_dir = str(root / f"tb-tensorboardx-{round_}")
        order = [("tbx", n_tbx), ("ml", n_ml)] if round_ % 2 else [("ml", n_ml), ("tbx", n_tbx)]
        for who, n in order:
            if who == "ml":
                m = peers.run_workload(MLTRACK_TB, str(ml_dir), {"N": n})
                read = peers.run_workload(READ_MLTRACK, str(ml_dir), {"RUN": m["run"]})
                if read["points"] != n:
                    raise RuntimeError(f"mltrack stored {read['points']} of {n} points")
                ml_cost.append(m["calling_s"] / n * 1e6)
                ml_tp.append(n / m["durable_s"])
                ml_read.append(read["read_s"])
                imported = imported or m["tb_imported"]
            else:
                t = peers.run_workload(TENSORBOARDX, tbx_dir, {"N": n})
                count = peers.run_workload(READ_EVENT_ACCUMULATOR, tbx_dir)
                if count["points"] != n:
                    raise RuntimeError(f"tensorboardX stored {count['points']} of {n} points")
                tbx_cost.append(t["calling_s"] / n * 1e6)
                tbx_tp.append(n / t["durable_s"])
    # Reading: both read n_ml points, mltrack from its run, EventAccumulator from tensorboardX's.
    read_dir = root / "tb-read-tensorboardx"
    peers.run_workload(TENSORBOARDX, str(read_dir), {"N": n_ml}, timeout=1800)
    for _ in range(repeats):
        ea_read.append(peers.run_workload(READ_EVENT_ACCUMULATOR, str(read_dir), timeout=1800)["read_s"])

    cost = _median(ml_cost) / _median(tbx_cost)
    results.goal(
        "T1",
        "tensorboard: calling-thread cost per point, `log_metric` vs tensorboardX `add_scalar` (crc32c)",
        f"{_median(ml_cost):.2f} µs vs {_median(tbx_cost):.1f} µs = 1/{1 / cost:.0f}",
        "<= 1/30",
        cost <= 1 / 30,
    )
    tp = _median(ml_tp) / _median(tbx_tp)
    results.goal(
        "T2",
        "tensorboard: durable throughput (first log call to finish/close, all read back by a fresh process)",
        f"{_median(ml_tp):,.0f} vs {_median(tbx_tp):,.0f} points/s = {tp:.1f}x "
        f"({n_ml:,} vs {n_tbx:,} points; mltrack's writer start included)",
        ">= 1x",
        tp >= 1.0,
    )
    read_ratio = _median(ml_read) / _median(ea_read)
    results.goal(
        "T3",
        f"tensorboard: reading a {n_ml:,}-point metric, mltrack's repository vs `EventAccumulator`",
        f"{_median(ml_read):.2f} s vs {_median(ea_read):.2f} s = {read_ratio:.2f}x",
        "<= 1x",
        read_ratio <= 1.0,
    )
    results.goal(
        "T4",
        "tensorboard: the training process imports tensorboard",
        "yes" if imported else "no",
        "no",
        not imported,
    )
    results.sections.append(
        "## TensorBoard backend\n\n"
        f"mltrack with `ML_TRACKING_BACKEND=tensorboard` (writer process) against tensorboardX "
        f"{_version('tensorboardX')} with crc32c {_version('crc32c')}, tensorboard {_version('tensorboard')}; "
        f"medians of {repeats} interleaved rounds. Per round (µs a point, calling thread): mltrack "
        f"{', '.join(f'{x:.2f}' for x in ml_cost)}; tensorboardX {', '.join(f'{x:.1f}' for x in tbx_cost)}. "
        f"Reads (s): mltrack {', '.join(f'{x:.2f}' for x in ml_read)}; EventAccumulator "
        f"{', '.join(f'{x:.2f}' for x in ea_read)}.\n"
    )


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


class _Print:
    """A stand-in for run.py's Results: prints rows and sections."""

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
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    sink = _Print()
    with tempfile.TemporaryDirectory(prefix="mltrack-tb-bench-") as tmp:
        bench_tensorboard(sink, Path(tmp), args.rounds or (2 if args.quick else 3), args.quick)
    print("\n".join(sink.sections))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    raise SystemExit(main())
