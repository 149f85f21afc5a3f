"""``mltrack watch``: a live terminal dashboard of the runs published to Redis, from any machine.

One row per run: status (crashed and stalled runs flagged the moment their heartbeat lapses or
their progress stops), a progress bar with ETA, the phase, the latest value and a sparkline of
the chosen metrics, and the rest of the session state. Plain text over SSH, redrawn in place
with rich. Only click is imported with the module: ``mltrack`` loads it for every command.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

import click

__all__ = ["Board", "sparkline", "watch"]

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 40
"""Points per metric a sparkline shows."""
PREFERRED = ("rollout/ep_rew_mean", "eval/mean_reward", "train/loss", "loss", "reward", "accuracy")
STATE_SHOWN_ELSEWHERE = frozenset({"phase", "progress_done", "progress_total", "eta_seconds"})


def sparkline(values: list[float], width: int = 20) -> str:
    """``values`` (the last ``width``) as a line of block characters, lowest to highest."""
    shown = [v for v in values[-width:] if v == v]  # NaN: left out
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    span = high - low
    if span == 0:
        return SPARK[3] * len(shown)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] for v in shown)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _bar(done: float, total: float, width: int = 12) -> str:
    share = 0.0 if total <= 0 else max(0.0, min(1.0, done / total))
    filled = round(share * width)
    return f"{'█' * filled}{'░' * (width - filled)} {share * 100:3.0f}%"


def _number(value: Any) -> str:
    if not isinstance(value, (int, float)):
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}"


class Board:
    """The runs on show and their metric histories, refreshed from Redis by :meth:`refresh`."""

    def __init__(
        self, client: Any, *, run: str | None, experiment: str | None, metrics: tuple[str, ...]
    ) -> None:
        from mltrack_redis import protocol

        self._p = protocol
        self._client = client
        self._run = run
        self._experiment = experiment
        self._metrics = metrics
        self._positions: dict[str, str] = {}
        self._history: dict[str, dict[str, deque[float]]] = {}
        self.rows: list[dict[str, Any]] = []
        self.error: str | None = None
        self.retrying = True
        """Whether another refresh follows (not for ``--once``)."""

    def _run_ids(self) -> list[str]:
        p = self._p
        ids = [str(i) for i in self._client.zrangebyscore(p.RUNS, time.time() - p.STATE_TTL, "+inf")]
        if self._run is not None:
            matches = [i for i in ids if i.startswith(self._run)]
            return matches or [self._run]
        return ids

    def refresh(self) -> None:
        """Read every shown run's state, flags and new metric points; announce crashed and stalled runs."""
        from mltrack_redis.live import ANNOUNCE_TTL, flag_event

        p = self._p
        client = self._client
        ids = self._run_ids()
        pipe = client.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(p.state_key(run_id))
            pipe.exists(p.alive_key(run_id))
            pipe.exists(p.active_key(run_id))
        answers = pipe.execute()
        rows = []
        for i, run_id in enumerate(ids):
            fields, alive, active = answers[3 * i : 3 * i + 3]
            if not fields or (self._experiment is not None and fields.get("experiment") != self._experiment):
                continue
            flag = p.flag(fields.get("status"), bool(alive), bool(active))
            if flag is not None and client.set(
                p.announce_key(run_id, flag), "1", nx=True, ex=ANNOUNCE_TTL[flag]
            ):
                entry = flag_event(run_id, flag, fields)
                client.xadd(p.stream_key(run_id), entry, maxlen=p.STREAM_MAXLEN, approximate=True)
                client.xadd(p.EVENTS, entry, maxlen=p.EVENTS_MAXLEN, approximate=True)
                if flag == p.CRASHED:
                    client.hset(p.state_key(run_id), "status", p.CRASHED)
            self._read_points(run_id)
            rows.append({"id": run_id, "fields": fields, "flag": flag})
        rows.sort(key=lambda r: r["fields"].get("started", ""))
        self.rows = rows

    def _read_points(self, run_id: str) -> None:
        p = self._p
        key = p.stream_key(run_id)
        start = self._positions.get(key)
        if start is None:  # first sight: the recent past only
            entries = list(reversed(self._client.xrevrange(key, count=200)))
        else:
            entries = self._client.xrange(key, min=f"({start}", count=5000)
        history = self._history.setdefault(run_id, {})
        for entry_id, fields in entries:
            self._positions[key] = entry_id
            event = p.decode_entry(entry_id, fields)
            if event is None or event.type != "metrics":
                continue
            for point in event.points:
                label = point.name
                if point.context:
                    label += json.dumps(dict(point.context), separators=(",", ":"))
                history.setdefault(label, deque(maxlen=HISTORY)).append(point.value)

    def _chosen(self, run_id: str) -> list[str]:
        names = list(self._history.get(run_id, {}))
        if self._metrics:
            return [m for m in self._metrics if m in names] or list(self._metrics)
        preferred = [m for m in PREFERRED if m in names]
        return (preferred or sorted(names))[:2]

    def render(self) -> Any:
        """The table as rich renders it."""
        from rich.table import Table
        from rich.text import Text

        title = "mltrack watch" + (f" · experiment {self._experiment}" if self._experiment else "")
        table = Table(title=title, expand=False, show_lines=False)
        for column in ("run", "experiment", "host", "status", "progress", "ETA", "phase", "metrics", "state"):
            table.add_column(column, overflow="fold")
        for row in self.rows:
            fields = row["fields"]
            state: dict[str, Any] = _json(fields.get("state"))
            status = fields.get("status", "?")
            style = {"completed": "green", "failed": "red", "crashed": "bold red", "interrupted": "yellow"}
            if row["flag"] == self._p.CRASHED:
                status_text = Text("CRASHED (no heartbeat)", style="bold red")
            elif row["flag"] == self._p.STALLED:
                status_text = Text("STALLED (no progress)", style="bold yellow")
            else:
                status_text = Text(status, style=style.get(status, "cyan"))
            done, total = state.get("progress_done"), state.get("progress_total")
            progress = _bar(float(done), float(total)) if isinstance(done, (int, float)) and total else "-"
            progress += f" {_number(done)}/{_number(total)}" if progress != "-" else ""
            running = status == "running" and row["flag"] is None
            eta = _duration(state.get("eta_seconds")) if progress != "-" and running else "-"
            lines = []
            history = self._history.get(row["id"], {})
            for name in self._chosen(row["id"]):
                series = list(history.get(name, ()))
                last = series[-1] if series else None
                lines.append(f"{name} {_number(last)} {sparkline(series)}")
            rest = {k: v for k, v in state.items() if k not in STATE_SHOWN_ELSEWHERE}
            label = fields.get("name") or row["id"][:8]
            table.add_row(
                f"{label} ({row['id'][:8]})" if fields.get("name") else label,
                fields.get("experiment", ""),
                f"{fields.get('host', '')}:{fields.get('pid', '')}",
                status_text,
                progress,
                eta,
                str(state.get("phase", "-")),
                "\n".join(lines) or "-",
                ", ".join(f"{k}={_number(v)}" for k, v in rest.items()) or "-",
            )
        if not self.rows:
            table.caption = "no runs published yet (training processes need MLTRACK_REDIS_URL)"
        if self.error:
            table.caption = f"Redis unreachable: {self.error.rstrip('.')}" + (
                "; retrying" if self.retrying else ""
            )
        return table


def _json(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@click.command("watch")
@click.argument("run", required=False)
@click.option("--experiment", "-e", help="Show the runs of this experiment only.")
@click.option("--metric", "-m", "metrics", multiple=True, help="Metric to show (repeat for several).")
@click.option("--url", help="Redis URL (default: MLTRACK_REDIS_URL).")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print the table once and exit (for scripts).")
def watch(
    run: str | None,
    experiment: str | None,
    metrics: tuple[str, ...],
    url: str | None,
    interval: float,
    once: bool,
) -> None:
    """Live dashboard of running runs: progress, ETA, metrics, state; crashed and stalled runs flagged.

    Reads the Redis that training processes publish to (MLTRACK_REDIS_URL), from any machine.
    RUN (an id or its first characters) shows one run. Ctrl-C ends it.
    """
    import redis
    from rich.console import Console
    from rich.live import Live

    from mltrack_redis.live import resolve_url

    client = redis.Redis.from_url(
        resolve_url(url), decode_responses=True, socket_timeout=5.0, socket_connect_timeout=2.0
    )
    board = Board(client, run=run, experiment=experiment, metrics=metrics)
    console = Console()

    def step() -> None:
        try:
            board.refresh()
            board.error = None
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            board.error = str(exc)

    if once:
        board.retrying = False
        step()
        console.print(board.render())
        raise SystemExit(1 if board.error else 0)
    try:
        with Live(board.render(), console=console, auto_refresh=False, transient=False) as live:
            while True:
                step()
                live.update(board.render(), refresh=True)
                time.sleep(max(0.1, interval))
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
