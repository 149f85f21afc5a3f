"""How the commands print: numbers, times, sizes, JSON, metric names, and the errors about them."""

from __future__ import annotations

import errno
import fnmatch
import functools
import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from mltrack.models import ExperimentSummary, MetricSeries

NOTE_NAMES = 8  # metric names listed in a note or hint before "and N more"
_HEADLINE = ("reward", "return", "accuracy", "acc", "loss", "score")


def make_console(stderr: bool = False) -> Console:
    """A rich console for one command's output, sized to the terminal, colourless when piped."""
    return _console_class()(stderr=stderr, highlight=False, soft_wrap=False)


@functools.cache
def _console_class() -> type[Console]:
    from rich.console import Console

    class PipeAwareConsole(Console):
        """Leaves a closed pipe to ``mltrack.cli.main``, which ends quietly with exit code 0.

        rich's own handling exits with code 1 after pointing stdout at /dev/null, which hides
        from ``main`` that the reader went away.
        """

        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError(errno.EPIPE, "the reader of mltrack's output closed the pipe")

    return PipeAwareConsole


def short(run_id: str) -> str:
    """A run id cut to the 8 characters `mltrack ls` shows (any unique prefix names a run)."""
    return run_id[:8]


def fmt_num(value: float | None) -> str:
    """A metric value as a table shows it: whole numbers bare, others to 6 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.6g}"


def fmt_duration(delta: timedelta) -> str:
    """A duration as ``1h02m03s`` (or ``2m03s`` under an hour)."""
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def fmt_time(when: datetime | None) -> str:
    """A time in the local zone, to the second; ``-`` for none."""
    return "-" if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def fmt_size(size: int | None) -> str:
    """A file size in B, KB, MB or GB; ``-`` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def json_value(value: Any) -> Any:
    """NaN and infinities as strings, so the output is standard JSON."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return str(value)
    if isinstance(value, dict):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    return value


def summary_dict(s: ExperimentSummary) -> dict[str, Any]:
    """A run summary as the ``--json`` output of every command shows it."""
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
        "resumed": s.resumed,
    }


def echo_json(data: Any) -> None:
    """Print ``data`` as indented standard JSON (NaN and infinities as strings)."""
    click.echo(json.dumps(json_value(data), indent=2, default=str))


def series_label(series: MetricSeries) -> str:
    """A metric series' name with its context, as ``loss{subset=val}``."""
    if not series.context:
        return series.name
    return series.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(series.context.items())) + "}"


SHOW_SERIES = 50
"""Metric series (and final metrics) `mltrack show` lists before summing up the rest; --all lists every one."""


def name_matcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """A test of metric names against shell-style patterns (``train/*``, ``loss``); no patterns: every name."""
    if not patterns:
        return lambda name: True
    return lambda name: any(fnmatch.fnmatchcase(name, p) for p in patterns)


def more_line(left: int, what: str, filtered: bool) -> str:
    """The line that stands for the ``left`` entries `mltrack show` did not list."""
    hint = "--all lists them" if filtered else "--all lists them, --metric PATTERN picks some"
    return f"  ... and {left:,} more {what} ({hint})"


def no_such_metric(metric: str, known: Iterable[str]) -> click.ClickException:
    """The error for a metric none of the runs has, with the closest name there is (a typo, most likely)."""
    import difflib

    names = sorted(set(known))
    close = difflib.get_close_matches(metric, names, n=1)
    if close:
        hint = f"did you mean {close[0]!r}?"
    elif names:
        more = f" and {len(names) - NOTE_NAMES} more" if len(names) > NOTE_NAMES else ""
        hint = f"they have: {', '.join(names[:NOTE_NAMES])}{more}"
    else:
        hint = "they have none"
    return click.ClickException(f"no metric {metric!r} in these runs; {hint}")


def final_metric_names(summaries: Iterable[ExperimentSummary]) -> set[str]:
    """Every final metric of these runs (a metric logged in a context as ``loss{subset=val}``)."""
    return {m for s in summaries for m in s.final_metrics}


def check_histories(
    metrics: Iterable[str], summaries: Sequence[ExperimentSummary], histories: Sequence[Any]
) -> None:
    """Raise for a metric that none of the loaded histories holds, suggesting the closest there is."""
    for metric in metrics:
        if not any(metric in h for h in histories):
            # The histories were loaded for the asked-for names only; final metrics name the rest.
            known = {m.split("{", 1)[0] for m in final_metric_names(summaries)}
            raise no_such_metric(metric, known)


def finite_values(values: Iterable[float]) -> list[float]:
    """The values that are numbers (NaN left out), for minimum and maximum."""
    return [v for v in values if not math.isnan(v)]


_GAP = 2  # spaces between columns (rich's padding of a borderless table)
_NAME_WIDTH = 28  # run and experiment names are cut beyond this, so metrics find room
_MIN_NAME_WIDTH = 8  # ... and run names down to this when the terminal is narrow
NOTE_NAMES = 8  # metric names listed in the note about left-out columns


_HEADLINE = ("reward", "return", "accuracy", "acc", "loss", "score")


def common_metrics(runs: Sequence[ExperimentSummary], first: str | None) -> list[str]:
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
