"""``mltrack export``: metric histories and run summaries to CSV, JSON or Parquet."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from mltrack.cli.formatting import check_histories, json_value, make_console, series_label, summary_dict
from mltrack.cli.store import open_repo

if TYPE_CHECKING:
    from mltrack.models import ExperimentSummary


@click.command()
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
    repo = open_repo()
    summaries = [repo.get_experiment_sync(r) for r in runs]
    histories = [
        repo.get_experiment_metrics_sync(s.experiment_id, names=list(metrics) or None) for s in summaries
    ]
    check_histories(metrics, summaries, histories)
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
            console=make_console(stderr=True),
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
        for series in sorted(history.all_series, key=series_label):
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
            d = summary_dict(s)
            writer.writerow(
                [
                    d["id"],
                    d["name"],
                    d["experiment_name"],
                    d["status"],
                    d["start_time"],
                    d["end_time"],
                    d["duration_s"],
                    json.dumps(json_value(d["config"])),
                    json.dumps(json_value(d["final_metrics"])),
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
            json_value({"runs": [summary_dict(s) for s in summaries], "metrics": metrics}), fh, default=str
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
    runs = [summary_dict(s) for s in summaries]
    pq.write_table(
        pa.table(
            {
                k: [
                    json.dumps(json_value(r[k]), default=str) if isinstance(r[k], (dict, list)) else r[k]
                    for r in runs
                ]
                for k in runs[0]
            }
        ),
        _runs_path(out),
    )
