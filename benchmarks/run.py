"""mltrack against raw Aim, side by side in one run: writes benchmarks/RESULTS.md.

The peers (MLflow, TensorBoard) are measured by ``peers.py`` in the same run, mltrack's
tensorboard backend against raw tensorboardX by ``tb_bench.py``, the Redis publisher by
``redis_bench.py``, mltrack's wandb backend against raw ``wandb.log`` by ``wandb_bench.py``,
wide runs (10,000 metrics) and many runs (1,000 one after another) by ``wide_bench.py``.

Each measurement runs in a fresh Python process (so import costs and memory are honest),
mltrack and Aim interleaved, repeated; the table reports medians and their ratio.

    nox -s bench                 # everything (about 10 minutes on 2 cores)
    nox -s bench -- --quick      # smaller sizes, fewer repeats (a smoke run)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import peers
import redis_bench
import tb_bench
import wandb_bench
import wide_bench

HERE = Path(__file__).parent

# --- workloads, each run as `python -c` in a fresh process; each prints one JSON line ------

_PRELUDE = """
import json, os, sys, time
def emit(**kw): print("RESULT " + json.dumps(kw), flush=True)
REPO = os.environ["BENCH_REPO"]
"""

AIM_TRACK = """
from aim import Run
N = int(os.environ["N"])
run = Run(repo=REPO, experiment="bench-aim", system_tracking_interval=None, capture_terminal_logs=False)
t0 = time.perf_counter()
for i in range(N):
    run.track(0.5 + i * 1e-6, name="loss", step=i)
t1 = time.perf_counter()
run.close()
t2 = time.perf_counter()
emit(per_point_us=(t1 - t0) / N * 1e6, durable_s=t2 - t0, points=N, hash=run.hash)
"""

AIM_TRACK_DICT5 = """
from aim import Run
N = int(os.environ["N"])
run = Run(repo=REPO, experiment="bench-aim", system_tracking_interval=None, capture_terminal_logs=False)
t0 = time.perf_counter()
for i in range(N // 5):
    run.track({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": float(i)}, step=i)
t1 = time.perf_counter()
run.close()
emit(per_point_us=(t1 - t0) / N * 1e6)
"""

MLTRACK_LOG = """
import mltrack
N = int(os.environ["N"])
mltrack.configure_backend("aim", repo_path=REPO)
t_create = time.perf_counter()
run = mltrack.start_run("bench-mltrack")
create_s = time.perf_counter() - t_create
t0 = time.perf_counter()
for i in range(N):
    run.log_metric("loss", 0.5 + i * 1e-6, step=i)
t1 = time.perf_counter()
run.finish()
t2 = time.perf_counter()
emit(per_point_us=(t1 - t0) / N * 1e6, durable_s=t2 - t0, points=N, run_id=run.id, create_s=create_s,
     finish_s=t2 - t1, aim_imported="aim" in sys.modules)
"""

MLTRACK_LOG5 = """
import mltrack
N = int(os.environ["N"])
mltrack.configure_backend("aim", repo_path=REPO)
run = mltrack.start_run("bench-mltrack")
t0 = time.perf_counter()
for i in range(N // 5):
    run.log_metrics({"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": float(i)}, step=i)
t1 = time.perf_counter()
run.finish()
emit(per_point_us=(t1 - t0) / N * 1e6)
"""

COUNT_POINTS = """
from mltrack.factory import experiment_repository
import mltrack
mltrack.configure_backend("aim", repo_path=REPO)
h = experiment_repository().get_experiment_metrics_sync(os.environ["RUN_ID"])
emit(points=len(h))
"""

READ_MLTRACK = """
import mltrack
from mltrack.factory import experiment_repository
mltrack.configure_backend("aim", repo_path=REPO)
repo = experiment_repository()
repo.get_experiment_sync(os.environ["RUN_ID"])  # warm: index, open the repository
t0 = time.perf_counter()
s = repo.get_experiment_metrics_sync(os.environ["RUN_ID"], names=["loss"]).series("loss")
t1 = time.perf_counter()
emit(read_s=t1 - t0, points=len(s))
"""

READ_AIM = """
from aim import Repo
from aim.sdk.index_manager import RepoIndexManager
repo = Repo.from_path(REPO)
run = repo.get_run(os.environ["RUN_ID"])
if run is None:
    RepoIndexManager.get_index_manager(repo).index(os.environ["RUN_ID"])
    from aim.sdk.repo import ContainerConfig
    repo.container_pool.pop(ContainerConfig("meta", None, True), None)
    run = repo.get_run(os.environ["RUN_ID"])
from aim.storage.context import Context
t0 = time.perf_counter()
metric = run.get_metric("loss", Context({}))
idx, vals = metric.values.sparse_numpy()
t1 = time.perf_counter()
emit(read_s=t1 - t0, points=len(vals))
"""

LIST_MLTRACK = """
import mltrack
from mltrack.factory import experiment_repository
mltrack.configure_backend("aim", repo_path=REPO)
repo = experiment_repository()
repo.list_experiments_sync(limit=1)  # warm
t0 = time.perf_counter()
runs = repo.list_experiments_sync()
emit(list_s=time.perf_counter() - t0, runs=len(runs))
"""

LIST_AIM = """
from aim import Repo
repo = Repo.from_path(REPO)
list(repo.iter_runs())  # warm
t0 = time.perf_counter()
rows = [(r.hash, r.name, r.experiment, r.get("hparams"), r.creation_time, r.end_time) for r in repo.iter_runs()]
emit(list_s=time.perf_counter() - t0, runs=len(rows))
"""

MAKE_RUNS = """
import mltrack
mltrack.configure_backend("aim", repo_path=REPO)
for i in range(int(os.environ["RUNS"])):
    with mltrack.start_run("many", {"i": i}) as run:
        run.log_metric("loss", 1.0 / (i + 1), step=0)
emit(done=True)
"""

IMPORT_TIME = """
import subprocess
best = 10**9
for _ in range(5):
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import mltrack"], capture_output=True, text=True).stderr
    line = [l for l in out.splitlines() if l.rstrip().endswith("| mltrack")][0]
    best = min(best, int(line.split("|")[1]))
emit(import_ms=best / 1000)
"""

SCALING = """
import mltrack, psutil
from mltrack.factory import tracking_session
mltrack.configure_backend("aim", repo_path=REPO)
proc = psutil.Process()
run = mltrack.start_run("bench-scaling")
tracking_session().flush()  # the writer process is up: start-up is not a per-point cost
rss0 = proc.memory_info().rss
marks = [int(m) for m in os.environ["MARKS"].split(",")]
rows, i, peak = [], 0, rss0
t_start = time.perf_counter()
for mark in marks:
    # One segment per decade: log as fast as possible, then wait until it is stored. The
    # durable cost per point of each segment shows whether storing slows as the run grows.
    t0 = time.perf_counter()
    n0 = i
    while i < mark:
        run.log_metric("loss", 0.5, step=i)
        i += 1
        if i % 100_000 == 0:
            peak = max(peak, proc.memory_info().rss)
    t1 = time.perf_counter()
    tracking_session().flush()
    t2 = time.perf_counter()
    peak = max(peak, proc.memory_info().rss)
    rows.append({"points": mark, "segment_points": mark - n0, "calling_us": (t1 - t0) / (mark - n0) * 1e6,
                 "durable_us": (t2 - t0) / (mark - n0) * 1e6})
run.finish()
t_done = time.perf_counter()
emit(rows=rows, rss_growth_mb=(peak - rss0) / 2**20, total_s=t_done - t_start, points=i, run_id=run.id)
"""


INIT_REPO = """
from mltrack_aim.store import ensure_repo
ensure_repo(REPO)
emit(done=True)
"""


def run_workload(code: str, repo: Path, timeout: float = 1800, **env: Any) -> dict[str, Any]:
    if not repo.exists():
        repo.mkdir(parents=True)
        run_workload(INIT_REPO, repo)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_", "MLTRACK_", "AIM_"))}
    # The workloads count the points they log; system metrics (benchmarks/system_bench.py) would add theirs.
    full_env["MLTRACK_SYSTEM_METRICS"] = "0"
    full_env.update({k: str(v) for k, v in env.items()}, BENCH_REPO=str(repo))
    return peers.run_fresh(_PRELUDE + textwrap.dedent(code), full_env, timeout)


def median(values: list[float]) -> float:
    return statistics.median(values)


class Results:
    """Collects goal rows and extra tables, then writes RESULTS.md."""

    def __init__(self) -> None:
        self.goals: list[tuple[str, str, str, str, str]] = []
        self.sections: list[str] = []

    def goal(self, number: str, what: str, measured: str, target: str, met: bool | None) -> None:
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        self.goals.append((number, what, measured, target, verdict))
        print(f"[{verdict}] {number} {what}: {measured} (goal {target})", flush=True)

    def write(self, path: Path, header: str) -> None:
        lines = [header, "", "| # | goal | measured | target | |", "|---|---|---|---|---|"]
        lines += [f"| {n} | {w} | {m} | {t} | {v} |" for n, w, m, t, v in self.goals]
        path.write_text("\n".join([*lines, "", *self.sections, *kept_sections(path)]) + "\n")


KEPT_MARKERS = (("<!-- load-test:begin -->", "<!-- load-test:end -->"),)
"""Sections other benchmarks write into RESULTS.md (benchmarks/load_test.py): kept as they are."""


def kept_sections(path: Path) -> list[str]:
    """The sections between KEPT_MARKERS in the current RESULTS.md, markers included."""
    text = path.read_text() if path.exists() else ""
    kept = []
    for begin, end in KEPT_MARKERS:
        if begin in text and end in text.split(begin, 1)[1]:
            kept.append(begin + text.split(begin, 1)[1].split(end, 1)[0] + end + "\n")
    return kept


def machine_header(quick: bool) -> str:
    def version(dist: str) -> str:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as v

        try:
            return v(dist)
        except PackageNotFoundError:
            return "-"

    return textwrap.dedent(
        f"""\
        # mltrack benchmark results

        Written by `nox -s bench`{" -- --quick (smaller sizes)" if quick else ""} on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.
        Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.platform()}.
        Versions: mltrack-core {version("mltrack-core")}, mltrack-aim {version("mltrack-aim")}, aim {version("aim")},
        aimrocks {version("aimrocks")}, stable-baselines3 {version("stable-baselines3")}, torch {version("torch")}.
        Each number is the median of repeated runs, mltrack and raw Aim interleaved in fresh processes.
        Ratios compare with raw Aim measured in the same run; the machine is shared and noisy."""
    )


def bench_write(results: Results, root: Path, repeats: int, quick: bool) -> None:
    repo = root / "write"
    n_aim = 2_000 if quick else 10_000
    # mltrack's durable time includes starting its writer process (about 1.5 s: importing aim),
    # so it is measured on a run of realistic size; Aim's rate does not depend on the size.
    n_ml = 50_000 if quick else 1_000_000
    aim1, aim5, ml1, ml5, aim_tp, ml_tp, creates, finishes = [], [], [], [], [], [], [], []
    imported = False
    for _ in range(repeats):
        a = run_workload(AIM_TRACK, repo, N=n_aim)
        m = run_workload(MLTRACK_LOG, repo, N=n_ml)
        aim1.append(a["per_point_us"])
        ml1.append(m["per_point_us"])
        aim_tp.append(a["points"] / a["durable_s"])
        # durable: every point readable by a fresh process once finish returned
        count = run_workload(COUNT_POINTS, repo, RUN_ID=m["run_id"])["points"]
        if count != n_ml:
            raise RuntimeError(f"mltrack stored {count} of {n_ml} points")
        ml_tp.append(m["points"] / m["durable_s"])
        creates.append(m["create_s"])
        finishes.append(m["finish_s"])
        imported = imported or m["aim_imported"]
        aim5.append(run_workload(AIM_TRACK_DICT5, repo, N=n_aim)["per_point_us"])
        ml5.append(run_workload(MLTRACK_LOG5, repo, N=n_ml)["per_point_us"])
    ratio1 = median(ml1) / median(aim1)
    ratio5 = median(ml5) / median(aim5)
    results.goal(
        "1a",
        "calling-thread cost per point, `log_metric` vs `run.track`",
        f"{median(ml1):.2f} µs vs {median(aim1):.0f} µs = 1/{1 / ratio1:.0f}",
        "<= 1/100",
        ratio1 <= 0.01,
    )
    results.goal(
        "1b",
        "calling-thread cost per point, `log_metrics` (5 values) vs `run.track(dict)`",
        f"{median(ml5):.2f} µs vs {median(aim5):.0f} µs = 1/{1 / ratio5:.0f}",
        "<= 1/100",
        ratio5 <= 0.01,
    )
    tp = median(ml_tp) / median(aim_tp)
    results.goal(
        "2",
        f"durable throughput: {n_ml:,} points (Aim: {n_aim:,}), first log call to finish returned, all readable by a fresh process",
        f"{median(ml_tp):,.0f} vs {median(aim_tp):,.0f} points/s = {tp:.1f}x",
        ">= 10x",
        tp >= 10,
    )
    results.goal(
        "7a",
        "the training process does not import aim",
        "aim imported" if imported else "aim not imported",
        "not imported",
        not imported,
    )
    results.goal(
        "7b",
        "first `create_run` in a process, repository existing",
        f"{median(creates) * 1000:.1f} ms (finish: {median(finishes) * 1000:.0f} ms incl. draining)",
        "< 50 ms",
        median(creates) < 0.05,
    )


def bench_read(results: Results, root: Path, repeats: int, quick: bool) -> None:
    repo = root / "read"
    n = 100_000 if quick else 1_000_000
    made = run_workload(MLTRACK_LOG, repo, N=n)
    ml, aim = [], []
    for _ in range(repeats):
        ml.append(run_workload(READ_MLTRACK, repo, RUN_ID=made["run_id"])["read_s"])
        aim.append(run_workload(READ_AIM, repo, RUN_ID=made["run_id"])["read_s"])
    ratio = median(ml) / median(aim)
    results.goal(
        "4a",
        f"read a {n:,}-point metric: `series(name)` vs Aim's `sparse_numpy()`",
        f"{median(ml):.2f} s vs {median(aim):.2f} s = {ratio:.2f}x",
        "<= 1.2x",
        ratio <= 1.2,
    )
    runs = 100 if quick else 1000
    lrepo = root / "list"
    run_workload(MAKE_RUNS, lrepo, RUNS=runs)
    ml, aim = [], []
    for _ in range(repeats):
        m = run_workload(LIST_MLTRACK, lrepo)
        if m["runs"] != runs:
            raise RuntimeError(f"mltrack listed {m['runs']} of {runs} runs")
        ml.append(m["list_s"])
        aim.append(run_workload(LIST_AIM, lrepo)["list_s"])
    ratio = median(ml) / median(aim)
    results.goal(
        "4b",
        f"list {runs:,} runs (with status, config, final metrics) vs iterating them with Aim's SDK",
        f"{median(ml):.2f} s vs {median(aim):.2f} s = {ratio:.2f}x",
        "<= 1.2x",
        ratio <= 1.2,
    )


def bench_scaling(results: Results, root: Path, quick: bool) -> None:
    ms = run_workload(IMPORT_TIME, root)
    results.goal(
        "5a",
        "`import mltrack` (python -X importtime, best of 5)",
        f"{ms['import_ms']:.1f} ms",
        "< 100 ms",
        ms["import_ms"] < 100,
    )
    marks = [10_000, 100_000, 1_000_000] if quick else [10_000, 100_000, 1_000_000, 10_000_000]
    res = run_workload(SCALING, root / "scaling", MARKS=",".join(map(str, marks)), timeout=3600)
    results.goal(
        "5b",
        f"RSS growth of the training process while logging {marks[-1]:,} points as fast as possible",
        f"{res['rss_growth_mb']:.0f} MB",
        "< 100 MB",
        res["rss_growth_mb"] < 100,
    )
    costs = [r["durable_us"] for r in res["rows"]]
    spread = max(costs) / min(costs)
    results.goal(
        "6",
        f"durable cost per point, each decade of one run from 10^4 to {marks[-1]:,} points",
        f"{min(costs):.2f}-{max(costs):.2f} µs = {spread:.2f}x spread",
        "within 1.5x",
        spread <= 1.5,
    )
    table = [
        "## Cost per point as the run grows",
        "",
        "One run; each decade is logged as fast as possible, then flushed (stored).",
        "",
        "| points so far | calling-thread µs/point (backpressure included) | durable µs/point |",
        "|---|---|---|",
    ]
    table += [f"| {r['points']:,} | {r['calling_us']:.2f} | {r['durable_us']:.2f} |" for r in res["rows"]]
    table += ["", f"All {res['points']:,} points stored after {res['total_s']:.1f} s."]
    results.sections.append("\n".join(table))


def bench_sb3(results: Results, quick: bool) -> None:
    script = HERE / "sb3_bench.py"
    if not script.exists():
        results.goal(
            "3",
            "PPO CartPole with TrackingCallback vs untracked",
            "not measured (no sb3_bench.py)",
            ">= 0.97x",
            None,
        )
        return
    proc = subprocess.run(
        [sys.executable, str(script), *(["--quick"] if quick else [])],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        results.goal(
            "3", "PPO CartPole with TrackingCallback vs untracked", "sb3_bench.py failed", ">= 0.97x", False
        )
        results.sections.append("## SB3 benchmark failed\n\n```\n" + proc.stderr[-2000:] + "\n```")
        return
    ratio = None
    for line in proc.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] == "TrackingCallback" and len(cells) > 2 and cells[2].endswith("x"):
            ratio = float(cells[2][:-1])
    results.goal(
        "3",
        "PPO CartPole steps/s with TrackingCallback vs untracked",
        "see table" if ratio is None else f"{ratio:.3f}x",
        ">= 0.97x",
        None if ratio is None else ratio >= 0.97,
    )
    results.sections.append(
        "## Stable-Baselines3\n\n"
        + "\n".join(ln for ln in proc.stdout.splitlines() if not ln.startswith("RATIO "))
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument(
        "--only",
        choices=["write", "read", "scaling", "sb3", "peers", "tensorboard", "redis", "wandb", "wide"],
        action="append",
    )
    args = parser.parse_args()
    repeats = 2 if args.quick else 3
    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mltrack-bench-") as tmp:
        root = Path(tmp)
        for name in ("write", "read", "scaling", "sb3", "peers", "tensorboard", "redis", "wandb", "wide"):
            if args.only and name not in args.only:
                continue
            if name == "write":
                bench_write(results, root, repeats, args.quick)
            elif name == "read":
                bench_read(results, root, repeats, args.quick)
            elif name == "scaling":
                bench_scaling(results, root, args.quick)
            elif name == "sb3":
                bench_sb3(results, args.quick)
            elif name == "tensorboard":
                tb_bench.bench_tensorboard(results, root, repeats, args.quick)
            elif name == "redis":
                redis_bench.bench_redis(results, root, repeats, args.quick)
            elif name == "wandb":
                wandb_bench.bench_wandb(results, root, repeats, args.quick)
            elif name == "wide":
                wide_bench.bench_wide(results, root, repeats, args.quick)
            else:
                peers.bench_peers(results, root, repeats, args.quick)
    results.sections.append(f"Benchmark wall time: {time.monotonic() - started:.0f} s.")
    results.write(args.out, machine_header(args.quick))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
