"""Wide and many runs on one store: a run of 10,000 metrics, and 1,000 short runs one after another.

Four goals, each measured in fresh processes, medians reported:

* W1: reading a run of 10,000 metric names x 10 points (written by mltrack) through the
  repository, on Aim, in a fresh process (opening the store included): <= 5 s; Aim's own
  SDK (``iter_metrics_info`` + ``get_metric().data.numpy()``) reads the same run beside it;
* W2: ``mltrack show`` on that run summarises (at most ~120 lines) instead of printing every
  series; its time, and ``--all``'s, are reported;
* W3: 1,000 short runs created one after another in one process (``start_run``, 3 points,
  ``finish``), every one listed afterwards: <= 30 s; raw Aim (``Run()``, ``track`` x 3,
  ``close()``) beside it, in the same rounds;
* W4: the same wide run on MLflow (SQLite), read through the repository (reported).

``run.py --only wide`` calls :func:`bench_wide`; alone, ``python benchmarks/wide_bench.py
[--quick] [--update-results]`` prints the same rows (and with ``--update-results`` puts
them into RESULTS.md in place of an earlier run's W rows, leaving the others as they are).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import peers

__all__ = ["bench_wide", "main"]

HERE = Path(__file__).parent
MLTRACK = str(Path(sys.executable).parent / "mltrack")
SHOW_LINES = 120  # what a summary may take: header, 50 final metrics, 50 series, two "... more" lines

# Every workload configures its store from the environment, as a user sets it.

INIT_AIM = """
from mltrack_aim.store import ensure_repo
ensure_repo(WHERE)
emit(done=True)
"""

WRITE_WIDE = """
import mltrack
NAMES, STEPS = int(os.environ["NAMES"]), int(os.environ["STEPS"])
t0 = time.perf_counter()
run = mltrack.start_run("wide")
for step in range(STEPS):
    run.log_metrics({f"layer{i % 50:02d}/m{i:05d}": i + step * 0.5 for i in range(NAMES)}, step=step)
run.finish()
emit(run=run.id, write_s=time.perf_counter() - t0)
"""

READ_WIDE_MLTRACK = """
t0 = time.perf_counter()
from mltrack.factory import experiment_repository
repo = experiment_repository()
summary = repo.get_experiment_sync(os.environ["RUN"])
t1 = time.perf_counter()
history = repo.get_experiment_metrics_sync(summary.experiment_id)
t2 = time.perf_counter()
last = history.series("layer00/m00000").values[-1]
emit(total_s=t2 - t0, open_s=t1 - t0, read_s=t2 - t1, series=len(history.all_series), points=len(history),
     last=float(last))
"""

READ_WIDE_AIM = """
t0 = time.perf_counter()
from aim import Repo
repo = Repo.from_path(WHERE)
run = repo.get_run(os.environ["RUN"])
t1 = time.perf_counter()
series = points = 0
for name, context, _ in run.iter_metrics_info():
    steps, (values, _epochs, _times) = run.get_metric(name, context).data.numpy()
    series += 1
    points += len(values)
t2 = time.perf_counter()
emit(total_s=t2 - t0, open_s=t1 - t0, read_s=t2 - t1, series=series, points=points)
"""

MANY_MLTRACK = """
import mltrack
RUNS = int(os.environ["RUNS"])
t0 = time.perf_counter()
for i in range(RUNS):
    run = mltrack.start_run("many", {"i": i})
    for step in range(3):
        run.log_metric("loss", 1.0 / (i + 1) + step, step=step)
    run.finish()
t1 = time.perf_counter()
from mltrack.factory import experiment_repository
listed = len(experiment_repository().list_experiments_sync(name="many"))
emit(total_s=t1 - t0, listed=listed, list_s=time.perf_counter() - t1)
"""

MANY_AIM = """
from aim import Repo, Run
RUNS = int(os.environ["RUNS"])
repo = Repo.from_path(WHERE)
t0 = time.perf_counter()
for i in range(RUNS):
    run = Run(repo=repo, experiment="many", system_tracking_interval=None, capture_terminal_logs=False)
    run["hparams"] = {"i": i}
    for step in range(3):
        run.track(1.0 / (i + 1) + step, name="loss", step=step)
    run.close()
t1 = time.perf_counter()
emit(total_s=t1 - t0, listed=len(repo.list_all_runs()))
"""


def _aim_env(repo: Path) -> dict[str, str]:
    return {"ML_TRACKING_BACKEND": "aim", "AIM_REPO_PATH": str(repo)}


def _mlflow_env(folder: Path) -> dict[str, str]:
    return {"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(folder)}


def _aim_repo(path: Path) -> Path:
    if not path.exists():
        path.mkdir(parents=True)
        peers.run_workload(INIT_AIM, str(path))
    return path


def _show(env: dict[str, str], run_id: str, *args: str) -> tuple[float, int]:
    """Wall time and line count of ``mltrack show RUN ARGS`` in its own process."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("ML_", "MLTRACK_", "AIM_", "MLFLOW_"))}
    full.update(env, COLUMNS="160", MLFLOW_DISABLE_TELEMETRY="true")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [MLTRACK, "show", run_id, *args], capture_output=True, text=True, env=full, timeout=1800
    )
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"mltrack show failed: {proc.stderr[-2000:]}")
    return took, len(proc.stdout.splitlines())


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _rounds(values: list[float], fmt: str = "{:.2f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def bench_wide(
    results: Any,
    root: Path,
    repeats: int,
    quick: bool,
    goals: frozenset[str] = frozenset({"W1", "W2", "W3", "W4"}),
) -> None:
    """Measure the four goals (or those in ``goals``), adding goal rows and a section to ``results``."""
    names, steps = (2_000, 10) if quick else (10_000, 10)
    n_runs = 100 if quick else 1_000
    timeout = 3600
    section = ["## Wide and many runs\n"]
    if goals & {"W1", "W2"}:
        section.append(_wide_aim(results, root, repeats, names, steps, timeout, goals))
    if "W3" in goals:
        section.append(_many_runs(results, root, repeats, n_runs, timeout))
    if "W4" in goals:
        section.append(_wide_mlflow(results, root, repeats, names, steps, timeout))
    results.sections.append("\n".join(section))


def _wide_aim(
    results: Any, root: Path, repeats: int, names: int, steps: int, timeout: float, goals: frozenset[str]
) -> str:

    # W1, W2: one wide run written by mltrack on Aim, read by mltrack and by Aim's SDK.
    aim_repo = _aim_repo(root / "wide-aim")
    wrote = peers.run_workload(WRITE_WIDE, str(aim_repo), {**_aim_env(aim_repo), "NAMES": names, "STEPS": steps},
                               timeout=timeout)  # fmt: skip
    run_id = wrote["run"]
    # The first reader of a just-written run also flushes its write-ahead logs (Aim does that
    # on opening): reported apart, the rounds then measure reading as every later reader does.
    first = peers.run_workload(READ_WIDE_MLTRACK, str(aim_repo), {**_aim_env(aim_repo), "RUN": run_id},
                               timeout=timeout)  # fmt: skip
    ml_reads, aim_reads = [], []
    for round_ in range(repeats):
        order = ("aim", "ml") if round_ % 2 else ("ml", "aim")
        for who in order:
            if who == "ml":
                got = peers.run_workload(READ_WIDE_MLTRACK, str(aim_repo), {**_aim_env(aim_repo), "RUN": run_id},
                                         timeout=timeout)  # fmt: skip
                if got["series"] != names or got["points"] != names * steps:
                    raise RuntimeError(f"mltrack read {got['series']} series, {got['points']} points")
                ml_reads.append(got)
            elif round_ == 0:  # Aim's SDK takes about a millisecond a metric: once is enough
                got = peers.run_workload(READ_WIDE_AIM, str(aim_repo), {"RUN": run_id}, timeout=timeout)
                if got["series"] != names or got["points"] != names * steps:
                    raise RuntimeError(f"Aim's SDK read {got['series']} series, {got['points']} points")
                aim_reads.append(got)
    ml_total = _median([r["total_s"] for r in ml_reads])
    ml_read = _median([r["read_s"] for r in ml_reads])
    aim_total = _median([r["total_s"] for r in aim_reads])
    results.goal(
        "W1",
        f"Aim: read a run of {names:,} metrics x {steps} points through the repository, fresh process "
        "(opening included)",
        f"{ml_total:.2f} s ({ml_read:.2f} s reading the series; the first read after writing: "
        f"{first['total_s']:.2f} s); Aim SDK `iter_metrics_info`+`get_metric` {aim_total:.2f} s",
        "<= 5 s",
        ml_total <= 5.0,
    )

    if "W2" not in goals:
        return _wide_text(wrote, names, steps, ml_reads, aim_total, None)
    shows = [_show(_aim_env(aim_repo), run_id) for _ in range(repeats)]
    show_s, show_lines = _median([s for s, _ in shows]), shows[0][1]
    all_s, all_lines = _show(_aim_env(aim_repo), run_id, "--all")
    pick_s, pick_lines = _show(_aim_env(aim_repo), run_id, "--metric", "layer07/*")
    results.goal(
        "W2",
        f"`mltrack show` on that run: a summary, not {names:,} series",
        f"{show_s:.1f} s, {show_lines} lines (`--all`: {all_s:.1f} s, {all_lines:,} lines; "
        f"`--metric 'layer07/*'`: {pick_s:.1f} s, {pick_lines} lines)",
        f"<= {SHOW_LINES} lines",
        show_lines <= SHOW_LINES,
    )

    return _wide_text(wrote, names, steps, ml_reads, aim_total, [s for s, _ in shows])


def _wide_text(
    wrote: dict[str, Any],
    names: int,
    steps: int,
    reads: list[dict[str, Any]],
    aim_s: float,
    shows: list[float] | None,
) -> str:
    shown = "" if shows is None else f" `mltrack show` (s): {_rounds(shows, '{:.1f}')}."
    return (
        f"Aim: one run of {names:,} metric names x {steps} points written by mltrack ({wrote['write_s']:.1f} s), "
        f"read in fresh processes, {len(reads)} rounds: through the repository (s, opening included) "
        f"{_rounds([r['total_s'] for r in reads])}, of which reading the series {_rounds([r['read_s'] for r in reads])}; "
        f"Aim's SDK once: {aim_s:.2f} s.{shown}\n"
    )


def _many_runs(results: Any, root: Path, repeats: int, n_runs: int, timeout: float) -> str:
    # W3: many short runs, one after another, mltrack and raw Aim interleaved.
    ml_many, aim_many, listed = [], [], []
    for round_ in range(repeats):
        order = ("aim", "ml") if round_ % 2 else ("ml", "aim")
        for who in order:
            repo = _aim_repo(root / f"many-{who}-{round_}")
            if who == "ml":
                got = peers.run_workload(
                    MANY_MLTRACK, str(repo), {**_aim_env(repo), "RUNS": n_runs}, timeout=timeout
                )
                if got["listed"] != n_runs:
                    raise RuntimeError(f"mltrack listed {got['listed']} of {n_runs} runs")
                ml_many.append(got["total_s"])
                listed.append(got["list_s"])
            else:
                got = peers.run_workload(MANY_AIM, str(repo), {"RUNS": n_runs}, timeout=timeout)
                if got["listed"] != n_runs:
                    raise RuntimeError(f"Aim listed {got['listed']} of {n_runs} runs")
                aim_many.append(got["total_s"])
    many = _median(ml_many)
    results.goal(
        "W3",
        f"{n_runs:,} short runs one after another in one process (start_run, 3 points, finish), all listed after",
        f"mltrack {many:.1f} s ({many / n_runs * 1000:.0f} ms a run) vs raw Aim `Run()`+`track`x3+`close()` "
        f"{_median(aim_many):.1f} s ({_median(aim_many) / n_runs * 1000:.0f} ms a run)",
        f"<= {30 * n_runs / 1000:.0f} s",
        many <= 30 * n_runs / 1000,
    )

    return (
        f"{n_runs:,} runs one after another (s): mltrack {_rounds(ml_many, '{:.1f}')}; raw Aim "
        f"{_rounds(aim_many, '{:.1f}')} (its runs are not in Aim's index: `iter_runs()` and `query_runs` do not "
        f"see them until `aim up` or a reindex runs; mltrack's are indexed). Listing the {n_runs:,} runs "
        f"afterwards: {_rounds(listed)} s. Each Aim run is two new RocksDB databases and a few SQLite commits; "
        "on this machine opening a new RocksDB database alone takes 40-60 ms.\n"
    )


def _wide_mlflow(results: Any, root: Path, repeats: int, names: int, steps: int, timeout: float) -> str:
    # W4: the same wide run on MLflow, read through the repository.
    mlflow_dir = root / "wide-mlflow"
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    wrote_mlflow = peers.run_workload(
        WRITE_WIDE,
        str(mlflow_dir),
        {**_mlflow_env(mlflow_dir), "NAMES": names, "STEPS": steps},
        timeout=timeout,
    )
    mlflow_reads = []
    for _ in range(repeats):
        got = peers.run_workload(
            READ_WIDE_MLTRACK, str(mlflow_dir), {**_mlflow_env(mlflow_dir), "RUN": wrote_mlflow["run"]},
            timeout=timeout,
        )  # fmt: skip
        if got["series"] != names or got["points"] != names * steps:
            raise RuntimeError(f"mltrack on MLflow read {got['series']} series, {got['points']} points")
        mlflow_reads.append(got)
    mlflow_total = _median([r["total_s"] for r in mlflow_reads])
    results.goal(
        "W4",
        f"MLflow (SQLite): read the same {names:,}-metric run through the repository, fresh process",
        f"{mlflow_total:.2f} s ({_median([r['read_s'] for r in mlflow_reads]):.2f} s reading the series)",
        "<= 5 s",
        mlflow_total <= 5.0,
    )

    return (
        f"MLflow (SQLite): the same run written by mltrack ({wrote_mlflow['write_s']:.1f} s), read through the "
        f"repository (s, opening included): {_rounds([r['total_s'] for r in mlflow_reads])}.\n"
    )


class _Print:
    """A stand-in for run.py's Results: prints rows, keeps them for RESULTS.md."""

    def __init__(self) -> None:
        self.sections: list[str] = []
        self.rows: list[str] = []

    def goal(self, number: str, what: str, measured: str, target: str, met: bool | None) -> None:
        verdict = "n/a" if met is None else ("met" if met else "NOT met")
        self.rows.append(f"| {number} | {what} | {measured} | {target} | {verdict} |")
        print(f"[{verdict}] {number} {what}: {measured} (goal {target})", flush=True)


def update_results(path: Path, rows: list[str], section: str) -> None:
    """Put the W rows and the section into RESULTS.md, replacing an earlier run's, keeping the rest."""
    lines = path.read_text().splitlines()
    measured = {row.split("|")[1].strip() for row in rows}
    lines = [ln for ln in lines if not (re.match(r"\| W\d+ \|", ln) and ln.split("|")[1].strip() in measured)]
    kept = [ln for ln in lines if re.match(r"\| W\d+ \|", ln)]
    lines = [ln for ln in lines if ln not in kept]
    last_row = max(i for i, ln in enumerate(lines) if ln.startswith("|") and i < _first_section(lines))
    lines[last_row + 1 : last_row + 1] = sorted(
        [*kept, *rows], key=lambda row: int(row.split("|")[1].strip()[1:])
    )
    text = "\n".join(lines) + "\n"
    heading = section.splitlines()[0]
    if heading not in text:
        path.write_text(text.rstrip("\n") + "\n\n" + section)
        return
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    end = len(text) if nxt < 0 else nxt + 1
    # Paragraph by paragraph: a run of some goals replaces only the paragraphs it wrote anew.
    old = [p for p in text[start:end].split("\n\n") if p.strip()]
    for paragraph in (p for p in section.split("\n\n") if p.strip()):
        same = [i for i, p in enumerate(old) if p.split(" ", 2)[:2] == paragraph.split(" ", 2)[:2]]
        if same:
            old[same[0]] = paragraph.strip("\n")
        else:
            old.append(paragraph.strip("\n"))
    merged = "\n\n".join(p.strip("\n") for p in old) + "\n"
    path.write_text(text[:start] + merged + ("\n" if nxt >= 0 else "") + text[end:])


def _first_section(lines: list[str]) -> int:
    return next((i for i, ln in enumerate(lines) if ln.startswith("## ")), len(lines))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 metrics and 100 runs, 2 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--goals", default="W1,W2,W3,W4", help="which goals to measure, e.g. W1,W2")
    parser.add_argument(
        "--results", type=Path, default=HERE / "RESULTS.md", help="the file --update-results writes"
    )
    parser.add_argument(
        "--update-results", action="store_true", help="write the rows and section into benchmarks/RESULTS.md"
    )
    args = parser.parse_args()
    sink = _Print()
    with tempfile.TemporaryDirectory(prefix="mltrack-wide-bench-") as tmp:
        goals = frozenset(g.strip().upper() for g in args.goals.split(","))
        bench_wide(sink, Path(tmp), args.rounds or (2 if args.quick else 3), args.quick, goals)
    print("\n".join(sink.sections))
    if args.update_results:
        update_results(args.results, sink.rows, sink.sections[0])
        print(f"updated {args.results}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
