"""The ``mltrack`` command (also ``python -m mltrack``): a thin layer over ``ExperimentRepository``.

Exit codes: 0 ok, 1 error (message on stderr says what to do), 2 usage error.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mltrack import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from mltrack.config import TrackingConfig
    from mltrack.models import ExperimentSummary, MetricSeries
    from mltrack.repository import ExperimentRepository

EXIT_ERROR = 1
STATUSES = ("running", "completed", "failed", "interrupted", "crashed")


# --- helpers ----------------------------------------------------------------------------


def _read_config() -> TrackingConfig:
    """The configured stores, to be read: where there is none, that is an error, none is created."""
    import attrs

    from mltrack.config import current_config

    return attrs.evolve(current_config(), must_exist=True)


def _repo() -> ExperimentRepository:
    """The configured stores, opened for reading until the command ends."""
    from mltrack.factory import open_repository

    repo = open_repository(_read_config())
    click.get_current_context().call_on_close(repo.close)
    return repo


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    # rich sizes tables to the terminal and drops colour when output is not a TTY.
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _short(run_id: str) -> str:
    return run_id[:8]


def _fmt_num(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.6g}"


def _fmt_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _fmt_time(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _fmt_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def _json_value(value: Any) -> Any:
    """NaN and infinities as strings, so the output is standard JSON."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _summary_dict(s: ExperimentSummary) -> dict[str, Any]:
    return {
        "id": s.experiment_id,
        "name": s.name,
        "experiment_name": s.experiment_name,
        "status": s.status.value,
        "start_time": s.start_time.isoformat(),
        "end_time": None if s.end_time is None else s.end_time.isoformat(),
        "duration_s": round(s.duration.total_seconds(), 3),
        "config": s.config,
        "final_metrics": s.final_metrics,
        "tags": list(s.tags),
    }


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(_json_value(data), indent=2, default=str))


def _series_label(series: MetricSeries) -> str:
    if not series.context:
        return series.name
    return series.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(series.context.items())) + "}"


def _no_such_metric(metric: str, known: Iterable[str]) -> click.ClickException:
    """The error for a metric none of the runs has, with the closest name there is (a typo, most likely)."""
    import difflib

    names = sorted(set(known))
    close = difflib.get_close_matches(metric, names, n=1)
    if close:
        hint = f"did you mean {close[0]!r}?"
    elif names:
        more = f" and {len(names) - _NOTE_NAMES} more" if len(names) > _NOTE_NAMES else ""
        hint = f"they have: {', '.join(names[:_NOTE_NAMES])}{more}"
    else:
        hint = "they have none"
    return click.ClickException(f"no metric {metric!r} in these runs; {hint}")


def _final_metric_names(summaries: Iterable[ExperimentSummary]) -> set[str]:
    """Every final metric of these runs (a metric logged in a context as ``loss{subset=val}``)."""
    return {m for s in summaries for m in s.final_metrics}


def _check_histories(
    metrics: Iterable[str], summaries: Sequence[ExperimentSummary], histories: Sequence[Any]
) -> None:
    """Raise for a metric that none of the loaded histories holds, suggesting the closest there is."""
    for metric in metrics:
        if not any(metric in h for h in histories):
            # The histories were loaded for the asked-for names only; final metrics name the rest.
            known = {m.split("{", 1)[0] for m in _final_metric_names(summaries)}
            raise _no_such_metric(metric, known)


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


# --- the command group ------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="mltrack")
def cli() -> None:
    """mltrack: backend-agnostic experiment tracking.

    Every command reads the backend chosen by ML_TRACKING_BACKEND (or the one installed).
    Run ids may be given as any unique prefix, as `mltrack ls` shows them.
    """


@cli.command("ls")
@click.option("--status", type=click.Choice(STATUSES), help="Only runs with this status.")
@click.option("--name", help="Only runs of this experiment (or with this run name).")
@click.option("--tag", "tags", multiple=True, help="Only runs with this tag (repeatable: all must match).")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many runs.")
@click.option("--sort", "sort_metric", metavar="METRIC", help="Best first by this final metric.")
@click.option("--metric", "metrics", multiple=True, help="Final metric to show as a column (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ls_command(
    status: str | None,
    name: str | None,
    tags: tuple[str, ...],
    limit: int | None,
    sort_metric: str | None,
    metrics: tuple[str, ...],
    as_json: bool,
) -> None:
    """List runs, newest first (or best first with --sort).

    Shows the final metrics that fit the terminal and names the others on stderr; --metric
    columns are always shown (names are cut to make room, run ids never).

    Example: mltrack ls --status completed --sort reward --limit 10
    """
    from mltrack.repository import metric_direction

    runs = _repo().list_experiments_sync(
        status=status, name=name, tags=tags, limit=None if sort_metric else limit
    )
    if sort_metric and runs and sort_metric not in _final_metric_names(runs):
        raise _no_such_metric(sort_metric, _final_metric_names(runs))
    if sort_metric:
        sign = 1 if metric_direction(sort_metric) < 0 else -1  # no direction: highest first
        present = [
            r for r in runs if sort_metric in r.final_metrics and not math.isnan(r.final_metrics[sort_metric])
        ]
        absent = [r for r in runs if r not in present]
        runs = sorted(present, key=lambda r: sign * r.final_metrics[sort_metric]) + absent
        runs = runs[:limit] if limit else runs
    if as_json:
        _echo_json([_summary_dict(r) for r in runs])
        return
    if not runs:
        click.echo("No runs found.")
        return
    rows = [
        [
            _short(r.experiment_id),
            r.name,
            r.experiment_name or "-",
            r.status.value,
            r.start_time.astimezone().strftime("%m-%d %H:%M"),
            _fmt_duration(r.duration),
        ]
        for r in runs
    ]
    fixed = ("id", "name", "experiment", "status", "started", "duration")
    natural = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(fixed)]
    natural[1], natural[2] = min(natural[1], _NAME_WIDTH), min(natural[2], _NAME_WIDTH)
    least = {1: _MIN_NAME_WIDTH, 2: len("experiment")}

    def metric_width(m: str) -> int:
        return max(len(m), *(len(_fmt_num(r.final_metrics.get(m))) for r in runs))

    room = _console().width

    def fit(columns: list[str]) -> tuple[list[int], int]:
        """Widths of the fixed columns beside ``columns``, and the table's width.

        The run and experiment names give way (the one with more to spare first), never the
        ids; the table is wider than ``room`` only if the names cannot give enough.
        """
        widths = list(natural)
        total = sum(widths) + _GAP * (len(widths) - 1) + sum(metric_width(m) + _GAP for m in columns)
        while total > room:
            i = max(least, key=lambda j: widths[j] - least[j])
            if widths[i] <= least[i]:
                break
            widths[i] -= 1
            total -= 1
        return widths, total

    left_out: list[str] = []
    if metrics:  # asked for: always shown
        columns = list(metrics)
    else:  # as many metrics as fit, the others named on stderr
        columns = []
        for m in _common_metrics(runs, first=sort_metric):
            if left_out or fit([*columns, m])[1] > room:
                left_out.append(m)
            else:
                columns.append(m)
    widths, total = fit(columns)
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for header, width in zip(fixed, widths):
        table.add_column(header, no_wrap=True, overflow="ellipsis", width=width)
    for column in columns:
        table.add_column(column, justify="right", no_wrap=True, width=metric_width(column))
    for r, row in zip(runs, rows):
        table.add_row(*row, *(_fmt_num(r.final_metrics.get(c)) for c in columns))
    # Wider than the console only when the asked-for columns cannot fit even so: the terminal
    # wraps the lines, but nothing is cut.
    console = _console()
    console.width = max(room, total)
    console.print(table)
    if left_out:
        named = ", ".join(left_out[:_NOTE_NAMES]) + (
            f" and {len(left_out) - _NOTE_NAMES} more" if len(left_out) > _NOTE_NAMES else ""
        )
        click.echo(
            f"note: {len(left_out)} metric column(s) left out to fit {room} columns: {named}; "
            "show them with --metric NAME (repeatable), or everything with --json",
            err=True,
        )


_GAP = 2  # spaces between columns (rich's padding of a borderless table)
_NAME_WIDTH = 28  # run and experiment names are cut beyond this, so metrics find room
_MIN_NAME_WIDTH = 8  # ... and run names down to this when the terminal is narrow
_NOTE_NAMES = 8  # metric names listed in the note about left-out columns


_HEADLINE = ("reward", "return", "accuracy", "acc", "loss", "score")


def _common_metrics(runs: Sequence[ExperimentSummary], first: str | None) -> list[str]:
    """The final metrics, those worth a column first: the sort metric, then the most common,
    rewards, accuracies and losses before the rest."""
    counts: dict[str, int] = {}
    for r in runs:
        for m in r.final_metrics:
            counts[m] = counts.get(m, 0) + 1

    def rank(m: str) -> tuple[int, int, str]:
        headline = next((i for i, word in enumerate(_HEADLINE) if word in m.lower()), len(_HEADLINE))
        return (-counts[m], headline, m)

    ordered = sorted(counts, key=rank)
    if first:
        ordered = [first, *(m for m in ordered if m != first)]
    return ordered


@cli.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def show(run: str, as_json: bool) -> None:
    """Show one run: config, status, timing, final metrics, metric statistics and artifacts.

    Example: mltrack show 3f2a9c
    """
    repo = _repo()
    summary = repo.get_experiment_sync(run)
    history = repo.get_experiment_metrics_sync(summary.experiment_id)
    artifacts = repo.list_artifacts_sync(summary.experiment_id)
    stats: list[dict[str, Any]] = []
    for series in sorted(history.all_series, key=_series_label):
        values = [float(v) for v in series.values]
        finite = _finite(values)
        stats.append(
            {
                "metric": _series_label(series),
                "count": len(values),
                "first": values[0] if values else None,
                "last": values[-1] if values else None,
                "min": min(finite) if finite else None,
                "max": max(finite) if finite else None,
                "last_step": int(series.steps[-1]) if len(series.steps) else None,
            }
        )
    if as_json:
        _echo_json(
            {
                **_summary_dict(summary),
                "metrics": stats,
                "artifacts": [
                    {
                        "name": a.name,
                        "type": a.artifact_type.value,
                        "size": a.size,
                        "sha256": a.sha256,
                        "path": a.file_path,
                        "metadata": a.metadata,
                    }
                    for a in artifacts
                ],
            }
        )
        return
    from rich.table import Table

    console = _console()
    console.print(f"[bold]{summary.name}[/bold]  run {summary.experiment_id}")
    console.print(f"experiment: {summary.experiment_name}   status: {summary.status.value}")
    console.print(
        f"started: {_fmt_time(summary.start_time)}   ended: {_fmt_time(summary.end_time)}   "
        f"duration: {_fmt_duration(summary.duration)}"
    )
    if summary.tags:
        console.print(f"tags: {', '.join(summary.tags)}")
    if summary.config:
        console.print("\n[bold]config[/bold]")
        for key in sorted(summary.config):
            console.print(f"  {key} = {json.dumps(summary.config[key], default=str)}", soft_wrap=True)
    if summary.final_metrics:
        console.print("\n[bold]final metrics[/bold]")
        for key in sorted(summary.final_metrics):
            console.print(f"  {key} = {_fmt_num(summary.final_metrics[key])}")
    if stats:
        console.print()
        table = Table(title="metrics", title_justify="left", box=None, header_style="bold")
        for header in ("metric", "count", "first", "last", "min", "max", "last step"):
            table.add_column(header, justify="left" if header == "metric" else "right")
        for s in stats:
            table.add_row(
                s["metric"],
                str(s["count"]),
                _fmt_num(s["first"]),
                _fmt_num(s["last"]),
                _fmt_num(s["min"]),
                _fmt_num(s["max"]),
                str(s["last_step"]),
            )
        console.print(table)
    if artifacts:
        console.print()
        table = Table(title="artifacts", title_justify="left", box=None, header_style="bold")
        for header in ("name", "type", "size", "path"):
            table.add_column(header, overflow="fold")
        for a in artifacts:
            table.add_row(a.name, a.artifact_type.value, _fmt_size(a.size), a.file_path)
        console.print(table)


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--metric", "metrics", multiple=True, help="Metric to compare (repeatable; default: all final metrics)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def compare(runs: tuple[str, ...], metrics: tuple[str, ...], as_json: bool) -> None:
    """Compare runs side by side: differing hyperparameters, final metrics, the best run.

    A star marks the best run of each metric that has a direction: highest reward, return,
    accuracy or score, lowest loss or error. Times, counts and other metrics get none, and
    neither does a tie (it is named as one).

    Example: mltrack compare 3f2a9c 8be41d --metric reward
    """
    if len(runs) < 2:
        raise click.UsageError("compare needs at least two runs")
    comparison = _repo().compare_experiments_sync(list(runs), metrics=list(metrics) or None)
    known = _final_metric_names(comparison.runs)
    for metric in metrics:
        if metric not in known:
            raise _no_such_metric(metric, known)
    if as_json:
        _echo_json(
            {
                "runs": [_summary_dict(r) for r in comparison.runs],
                "differing_params": comparison.differing_params,
                "final_metrics": comparison.final_metrics,
                "best": comparison.best,
                "ties": comparison.ties,
            }
        )
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("")
    for r in comparison.runs:
        table.add_column(f"{r.name}\n{_short(r.experiment_id)}", justify="right")
    ids = [r.experiment_id for r in comparison.runs]
    for key, values in comparison.differing_params.items():
        table.add_row(key, *(json.dumps(values.get(i), default=str) for i in ids))
    if comparison.differing_params and comparison.metrics:
        table.add_section()
    for m in comparison.metrics:
        best = comparison.best.get(m)
        cells = []
        for i in ids:
            text = _fmt_num(comparison.final_metrics[i].get(m))
            cells.append(f"[bold]{text} *[/bold]" if i == best else text)
        table.add_row(m, *cells)
    console = _console()
    console.print(table)
    if not comparison.differing_params:
        console.print("(no hyperparameters differ)")
    names = {r.experiment_id: f"{r.name} ({_short(r.experiment_id)})" for r in comparison.runs}
    for m in comparison.metrics:
        if m in comparison.best:
            console.print(f"best by {m}: {names[comparison.best[m]]}")
        elif m in comparison.ties:
            tied = [names[i] for i in comparison.ties[m]]
            value = _fmt_num(comparison.final_metrics[comparison.ties[m][0]][m])
            console.print(f"best by {m}: a tie at {value} between {', '.join(tied[:-1])} and {tied[-1]}")


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "json", "parquet"]), default="csv", show_default=True
)
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Output file."
)
@click.option("--metric", "metrics", multiple=True, help="Only this metric (repeatable).")
def export(runs: tuple[str, ...], fmt: str, out: Path, metrics: tuple[str, ...]) -> None:
    """Export metric histories (and run summaries) to CSV, JSON or Parquet.

    CSV and Parquet write the points to OUT (columns run_id, run_name, metric, context, step,
    value, timestamp) and the run summaries beside it as <OUT stem>.runs.<ext>; JSON writes both
    into OUT.

    Example: mltrack export 3f2a9c --format csv --out metrics.csv
    """
    repo = _repo()
    summaries = [repo.get_experiment_sync(r) for r in runs]
    histories = [
        repo.get_experiment_metrics_sync(s.experiment_id, names=list(metrics) or None) for s in summaries
    ]
    _check_histories(metrics, summaries, histories)
    total = sum(len(h) for h in histories)
    out.parent.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[..., None]] = {
        "csv": _export_csv,
        "json": _export_json,
        "parquet": _export_parquet,
    }
    with _progress(total) as advance:
        writers[fmt](out, summaries, histories, advance)
    click.echo(f"exported {total} points of {len(summaries)} run(s) to {out}")


class _progress:
    """A progress bar on stderr for long exports (only on a terminal, only when long)."""

    def __init__(self, total: int) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._total = total
        self._bar = Progress(
            TextColumn("exporting"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} points"),
            TimeRemainingColumn(),
            console=_console(stderr=True),
            transient=False,
            disable=total < 100_000,
        )
        self._task = self._bar.add_task("export", total=total)

    def __enter__(self) -> Callable[[int], None]:
        self._bar.start()
        return lambda n: self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


def _rows(summaries: Sequence[ExperimentSummary], histories: Sequence[Any]) -> Iterable[tuple[Any, ...]]:
    for summary, history in zip(summaries, histories):
        for series in sorted(history.all_series, key=_series_label):
            ctx = json.dumps(dict(series.context), sort_keys=True) if series.context else ""
            ts = series.timestamps if series.timestamps is not None else [None] * len(series.steps)
            for step, value, t in zip(series.steps, series.values, ts):
                yield summary.experiment_id, summary.name, series.name, ctx, int(step), float(value), t


_COLUMNS = ("run_id", "run_name", "metric", "context", "step", "value", "timestamp")
_CHUNK = 20_000


def _runs_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.runs{out.suffix}")


def _export_csv(
    out: Path,
    summaries: Sequence[ExperimentSummary],
    histories: Sequence[Any],
    advance: Callable[[int], None],
) -> None:
    import csv

    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(_COLUMNS)
        chunk: list[tuple[Any, ...]] = []
        for row in _rows(summaries, histories):
            chunk.append((*row[:5], repr(row[5]), "" if row[6] is None else repr(float(row[6]))))
            if len(chunk) >= _CHUNK:
                writer.writerows(chunk)
                advance(len(chunk))
                chunk.clear()
        writer.writerows(chunk)
        advance(len(chunk))
    with _runs_path(out).open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            [
                "run_id",
                "name",
                "experiment_name",
                "status",
                "start_time",
                "end_time",
                "duration_s",
                "config",
                "final_metrics",
                "tags",
            ]
        )
        for s in summaries:
            d = _summary_dict(s)
            writer.writerow(
                [
                    d["id"],
                    d["name"],
                    d["experiment_name"],
                    d["status"],
                    d["start_time"],
                    d["end_time"],
                    d["duration_s"],
                    json.dumps(_json_value(d["config"])),
                    json.dumps(_json_value(d["final_metrics"])),
                    ";".join(d["tags"]),
                ]
            )


def _export_json(
    out: Path,
    summaries: Sequence[ExperimentSummary],
    histories: Sequence[Any],
    advance: Callable[[int], None],
) -> None:
    metrics = []
    for summary, history in zip(summaries, histories):
        for series in history.all_series:
            metrics.append(
                {
                    "run_id": summary.experiment_id,
                    "metric": series.name,
                    "context": dict(series.context),
                    "steps": [int(s) for s in series.steps],
                    "values": [float(v) for v in series.values],
                    "timestamps": None
                    if series.timestamps is None
                    else [float(t) for t in series.timestamps],
                }
            )
            advance(len(series))
    with out.open("w") as fh:
        json.dump(
            _json_value({"runs": [_summary_dict(s) for s in summaries], "metrics": metrics}), fh, default=str
        )


def _export_parquet(
    out: Path,
    summaries: Sequence[ExperimentSummary],
    histories: Sequence[Any],
    advance: Callable[[int], None],
) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise click.ClickException(
            "Parquet export needs pyarrow: pip install pyarrow (or use --format csv)"
        ) from None
    columns: dict[str, list[Any]] = {c: [] for c in _COLUMNS}
    for row in _rows(summaries, histories):
        for name, value in zip(_COLUMNS, row):
            columns[name].append(value)
    pq.write_table(pa.table(columns), out)
    advance(len(columns["step"]))
    runs = [_summary_dict(s) for s in summaries]
    pq.write_table(
        pa.table(
            {
                k: [
                    json.dumps(_json_value(r[k]), default=str) if isinstance(r[k], (dict, list)) else r[k]
                    for r in runs
                ]
                for k in runs[0]
            }
        ),
        _runs_path(out),
    )


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    required=True,
    help="A metric to plot against step (repeatable: one panel per metric, stacked).",
)
@click.option(
    "--smooth", type=click.IntRange(min=1), default=1, show_default=True, help="Moving average over K points."
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="FILE.png, FILE.svg or FILE.html",
)
def plot(runs: tuple[str, ...], metrics: tuple[str, ...], smooth: int, out: Path) -> None:
    """Plot metrics against step, one line per run, to a PNG, SVG or HTML file.

    Several --metric give one panel per metric, stacked and sharing the step axis.

    Example: mltrack plot 3f2a9c 8be41d --metric rollout/ep_rew_mean --metric train/loss --out ppo.png
    """
    if out.suffix.lower() not in (".png", ".svg", ".html"):
        raise click.UsageError("--out must end in .png, .svg or .html")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise click.ClickException(
            "mltrack plot needs matplotlib: pip install 'mltrack-core[plot]'"
        ) from None
    repo = _repo()
    metrics = tuple(dict.fromkeys(metrics))  # a metric given twice is drawn once
    summaries = [repo.get_experiment_sync(r) for r in runs]
    histories = [repo.get_experiment_metrics_sync(s.experiment_id, names=list(metrics)) for s in summaries]
    _check_histories(metrics, summaries, histories)
    # One metric keeps the 9x5 figure; each further one adds a panel of 3 inches below.
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(9, 2 + 3 * len(metrics)), dpi=100, sharex=True, squeeze=False
    )
    for ax, metric in zip(axes[:, 0], metrics):
        for summary, history in zip(summaries, histories):
            if metric not in history:
                raise click.ClickException(f"run {_short(summary.experiment_id)} has no metric {metric!r}")
            series = history.series(metric)
            steps = [int(s) for s in series.steps]
            values = _moving_average([float(v) for v in series.values], smooth)
            ax.plot(steps, values, label=f"{summary.name} ({_short(summary.experiment_id)})", linewidth=1.5)
        ax.set_ylabel(metric + (f" (moving average of {smooth})" if smooth > 1 else ""))
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".html":
        import html
        import io

        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        title = html.escape(", ".join(metrics))
        out.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>{buffer.getvalue()}</body></html>"
        )
    else:
        fig.savefig(out)
    plt.close(fig)
    click.echo(f"wrote {out}")


def _moving_average(values: list[float], k: int) -> list[float]:
    if k <= 1:
        return values
    out, window, total = [], [], 0.0
    for v in values:
        window.append(v)
        total += v
        if len(window) > k:
            total -= window.pop(0)
        out.append(total / len(window))
    return out


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: the store's own).")
def ui(host: str, port: int | None) -> None:
    """Open the backend's own web UI on the configured store; Ctrl-C stops it.

    Example: mltrack ui --port 43800
    """
    from mltrack.plugins import get_plugin_host

    backends = get_plugin_host().activate(_read_config(), tolerate_secondary=True)
    click.get_current_context().call_on_close(backends.close)
    handle = backends.read("mltrack_open_ui", host=host, port=port)
    if handle is None:
        raise click.ClickException(f"backend {backends.primary!r} has no web UI")
    click.echo(f"{backends.primary} UI: {handle.url}  (pid {handle.pid}; Ctrl-C to stop)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
        click.echo("UI stopped.")


@cli.command()
@click.argument("runs", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def rm(runs: tuple[str, ...], yes: bool) -> None:
    """Delete runs and their artifacts from every configured backend.

    Example: mltrack rm 3f2a9c --yes
    """
    repo = _repo()
    summaries = [repo.get_experiment_sync(r) for r in runs]
    names = ", ".join(f"{s.name} ({_short(s.experiment_id)})" for s in summaries)
    if not yes:
        click.confirm(f"Delete {len(summaries)} run(s): {names}?", abort=True, err=True)
    for s in summaries:
        repo.delete_experiment_sync(s.experiment_id)
    click.echo(f"deleted {len(summaries)} run(s): {names}")


def _options(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{flag} takes KEY=VALUE (e.g. repo_path=/data/aim), not {pair!r}")
        out[key] = value
    return out


@cli.command()
@click.argument("runs", nargs=-1)
@click.option("--from", "source", required=True, metavar="BACKEND", help="Backend to copy from.")
@click.option("--to", "target", required=True, metavar="BACKEND", help="Backend to copy to.")
@click.option(
    "--from-option",
    "from_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Source backend option (repeatable).",
)
@click.option(
    "--to-option",
    "to_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Target backend option (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def copy(
    runs: tuple[str, ...],
    source: str,
    target: str,
    from_options: tuple[str, ...],
    to_options: tuple[str, ...],
    as_json: bool,
) -> None:
    """Copy runs (default: all) between two installed backends; a second copy adds nothing.

    Each store's location comes from its usual settings (ML_STORAGE_PATH, AIM_REPO_PATH,
    MLFLOW_TRACKING_URI, ...) unless given as an option. Run ids and times are kept.

    Examples: mltrack copy --from aim --to mlflow;
    mltrack copy --from aim --to aim --to-option repo_path=/backup/aim 3f2a9c
    """
    from mltrack.factory import open_repository

    src_opts = _options(from_options, "--from-option")
    dst_opts = _options(to_options, "--to-option")
    if source == target and src_opts == dst_opts:
        raise click.UsageError(
            f"--from and --to are the same store ({source}): give the target its own location, "
            "e.g. --to-option repo_path=/other/place"
        )
    # The source is read (it must exist); the target is written (created if need be).
    with (
        open_repository(source, must_exist=True, **src_opts) as src,
        open_repository(target, **dst_opts) as dst,
    ):
        report = src.copy_to_sync(dst, runs or None)
    if as_json:
        import attrs

        _echo_json(attrs.asdict(report))
        return
    click.echo(
        f"copied {len(report.copied) + len(report.replaced)} run(s) from {source} to {target} "
        f"({report.points:,} points, {report.artifacts} artifact(s)); "
        f"{len(report.skipped)} already there"
    )
    if report.replaced:
        click.echo(f"replaced incomplete earlier copies: {', '.join(report.replaced)}")
    if report.running:
        click.echo(f"not copied, still running: {', '.join(report.running)} (copy them once finished)")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def backends(as_json: bool) -> None:
    """List installed plugins, the backends they provide with their hooks and options, and load errors.

    Example: mltrack backends --json
    """
    from mltrack.config import describe_options
    from mltrack.plugins import get_plugin_host

    host = get_plugin_host()
    plugins = host.plugins()
    regs = host.backends()
    backend_hooks = {name: _backend_hooks(reg) for name, reg in regs.items()}
    backend_options = {
        name: describe_options(reg.options) if reg.options is not None else None for name, reg in regs.items()
    }
    if as_json:
        _echo_json(
            {
                "plugins": [
                    {
                        "name": p.name,
                        "distribution": p.distribution,
                        "version": p.version,
                        "hooks": list(p.hooks),
                        "backends": sorted(n for n, r in regs.items() if r.plugin == p.name),
                    }
                    for p in plugins
                ],
                "backends": {
                    name: {
                        "plugin": reg.plugin,
                        "description": reg.description,
                        "persistent": reg.persistent,
                        "hooks": backend_hooks[name],
                        # None: the backend declares no options (it takes any)
                        "options": None
                        if backend_options[name] is None
                        else [
                            {"name": o.name, "type": o.type, "default": o.default}
                            for o in backend_options[name] or ()
                        ],
                    }
                    for name, reg in sorted(regs.items())
                },
                "load_errors": dict(host.load_errors),
            }
        )
        return
    if not plugins:
        click.echo("No mltrack plugins installed: pip install mltrack-aim")
    for p in plugins:
        provided = sorted(n for n, r in regs.items() if r.plugin == p.name)
        dist = f"{p.distribution} {p.version}" if p.distribution else "(registered in code)"
        click.echo(f"{p.name}  [{dist}]")
        if provided:
            click.echo(f"  backends: {', '.join(provided)}")
        click.echo(f"  hooks:    {', '.join(p.hooks)}")
        for name in provided:
            hooks = backend_hooks[name]
            click.echo(f"  backend {name}: {regs[name].description}".rstrip(": "))
            click.echo(f"    hooks:   {', '.join(hooks) if isinstance(hooks, list) else hooks}")
            described = backend_options[name]
            shown = (
                "any (none declared)"
                if described is None
                else ", ".join(f"{o.name}: {o.type} = {o.default!r}" for o in described) or "none"
            )
            click.echo(f"    options: {shown}")
    for name, err in sorted(host.load_errors.items()):
        click.echo(f"{name}  FAILED TO LOAD: {err}", err=True)


def _backend_hooks(reg: Any) -> list[str] | str:
    """The hooks of a backend, read from its class; why not, if the class cannot be imported."""
    try:
        return list(reg.hooks()) or "(not known until built: register it with backend_class=...)"
    except Exception as exc:  # the store's library is missing or broken: say so, list the rest
        return f"(cannot import the backend class: {type(exc).__name__}: {exc})"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def health(as_json: bool) -> None:
    """Check that the configured backend works; exit code 1 if not.

    Example: mltrack health --json
    """
    from mltrack.factory import health_sync

    status = health_sync(_read_config())
    if as_json:
        _echo_json(
            {
                "is_healthy": status.is_healthy,
                "backend": status.backend,
                "issues": list(status.issues),
                "details": status.details,
            }
        )
    else:
        state = "healthy" if status.is_healthy else "UNHEALTHY"
        click.echo(f"backend: {status.backend or '(none)'}  {state}")
        for issue in status.issues:
            click.echo(f"  issue: {issue}")
        for name, detail in status.details.get("backends", {}).items():
            for key, value in detail.items():
                click.echo(f"  {name}.{key}: {value}")
    if not status.is_healthy:
        raise SystemExit(EXIT_ERROR)


def _error(message: str) -> int:
    """Print ``error: <message>`` as one line on stderr; the exit code of a failed command."""
    click.echo("error: " + " ".join(message.split()), err=True)
    return EXIT_ERROR


def _os_error_message(exc: OSError) -> str:
    """An OSError in words, with the path and what to check (instead of a traceback)."""
    what = exc.strerror or str(exc)
    where = f": {exc.filename}" if exc.filename else ""
    return f"{what}{where}: check that the path is right and that you may read and write there"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Every failure ends here as one line on stderr (``error: ...``, exit code 1) rather than a
    traceback: the user needs the fix, not the stack. Usage errors keep click's message and
    exit code 2.
    """
    from mltrack.errors import MLTrackError

    try:
        result = cli.main(args=argv, prog_name="mltrack", standalone_mode=False)
    except click.exceptions.UsageError as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        return _error(exc.format_message())
    except MLTrackError as exc:
        return _error(str(exc))
    except OSError as exc:
        return _error(_os_error_message(exc))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
