"""The writer process: stores what a training process ships to it, and outlives it.

The training process only appends to its buffer and ships batches through a pipe; this
process imports the backend, writes, and when the pipe closes without a goodbye (the
trainer was killed) it stores everything it received, marks the trainer's open runs
CRASHED and exits. The store's import cost and its Python work never touch the trainer.

Protocol: length-prefixed pickles. Trainer -> writer: ``("config", TrackingConfig)``, then
``("op", Op)``, ``("barrier", n)`` and finally ``("close",)``. Writer -> trainer:
``("ack", n, stats, error)`` after every operation before barrier ``n`` is stored.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any

import attrs

from mltrack.config import TrackingConfig
from mltrack.errors import BackendError
from mltrack.models import ExperimentStatus, MetricBatch, final_metric_key
from mltrack.writer import HookSink, Op, WriterStats, _connection_error

if TYPE_CHECKING:
    from mltrack.plugins import ActiveBackends

log = logging.getLogger("mltrack")
_HEADER = struct.Struct("!I")


def _send(stream: IO[bytes], message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next message, or None at end of stream (the other side is gone)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)


def _stats_dict(stats: WriterStats) -> dict[str, Any]:
    return attrs.asdict(stats)


# --- the training process's side --------------------------------------------------------


class ProcessSink:
    """Ships operations to a writer process; ``barrier`` waits until it has stored them."""

    def __init__(self, config: TrackingConfig, stats: WriterStats) -> None:
        self._config = config
        self._stats = stats
        self._barrier_seq = 0
        self._lock = threading.Lock()
        self._remote: dict[str, Any] = _stats_dict(WriterStats())
        """The last counts the current writer process sent (it counts from zero when it starts)."""
        self._proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        # The child must import the same mltrack and plugins the trainer sees.
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        proc = subprocess.Popen(
            [sys.executable, "-m", "mltrack._writer_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C and group signals meant for the trainer spare it
        )
        assert proc.stdin is not None
        _send(proc.stdin, ("config", self._config))
        return proc

    @property
    def pid(self) -> int:
        """The writer process's PID."""
        return self._proc.pid

    def deliver(self, op: Op) -> None:
        """Ship ``op``; if the writer process died, count the loss and start a new one."""
        try:
            assert self._proc.stdin is not None
            _send(self._proc.stdin, ("op", op))
        except (BrokenPipeError, OSError) as exc:
            self._writer_died(op, exc)

    def _writer_died(self, op: Op, exc: BaseException) -> None:
        code = self._proc.poll()
        self._stats.write_errors += 1
        self._stats.points_undelivered += op.points
        self._stats.last_error = f"writer process died (exit code {code}): {exc}"
        log.error("mltrack: %s; starting a new one", self._stats.last_error)
        if self._config.strict:
            raise BackendError(self._stats.last_error) from exc
        self._remote = _stats_dict(WriterStats())
        self._proc = self._spawn()
        try:
            assert self._proc.stdin is not None
            _send(self._proc.stdin, ("op", op))
        except OSError:
            pass

    def barrier(self) -> None:
        """Wait until the writer process has stored everything shipped so far."""
        with self._lock:
            self._barrier_seq += 1
            seq = self._barrier_seq
            try:
                assert self._proc.stdin is not None and self._proc.stdout is not None
                _send(self._proc.stdin, ("barrier", seq))
                while True:
                    reply = _receive(self._proc.stdout)
                    if reply is None:
                        raise BrokenPipeError("writer process closed its pipe")
                    if reply[0] == "ack" and reply[1] == seq:
                        break
            except OSError as exc:
                self._writer_died(Op("barrier", {}), exc)
                return
        _, _, remote, error = reply
        self._merge(remote)
        if error is not None:
            raise BackendError(error)

    def _merge(self, remote: dict[str, Any]) -> None:
        """Add what the writer process counted since its last ack (this process counts too: observers)."""
        last = self._remote
        stats = self._stats
        for key in ("points_delivered", "points_undelivered", "write_errors", "retries"):
            setattr(stats, key, getattr(stats, key) + remote[key] - last[key])
        stats.last_error = remote["last_error"] or stats.last_error
        for target, count in remote["errors_by_target"].items():
            before = last["errors_by_target"].get(target, 0)
            stats.errors_by_target[target] = stats.errors_by_target.get(target, 0) + count - before
        self._remote = remote

    def close(self) -> None:
        """Say goodbye (nothing is CRASHED) and wait for the writer process to finish."""
        try:
            assert self._proc.stdin is not None
            _send(self._proc.stdin, ("close",))
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            log.error("mltrack: writer process %d did not exit; leaving it to finish", self._proc.pid)


# --- the writer process's side ----------------------------------------------------------


class _OpenRuns:
    """Runs the trainer created and has not finished, with each metric's last value."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, tuple[int, float]]] = {}

    def observe(self, op: Op) -> None:
        if op.hook == "mltrack_create_run":
            self.last[op.kwargs["run"].id] = {}
        elif op.hook == "mltrack_finish_run":
            self.last.pop(op.kwargs["run_id"], None)
        elif op.hook == "mltrack_log_metrics":
            finals = self.last.get(op.kwargs["run_id"])
            batch: MetricBatch = op.kwargs["batch"]
            if finals is not None:
                for name, ctx, steps, values, _ in batch.groups():
                    key = final_metric_key(name, tuple(sorted(ctx.items())))
                    best = max(range(len(steps)), key=steps.__getitem__)
                    prev = finals.get(key)
                    if prev is None or steps[best] >= prev[0]:
                        finals[key] = (steps[best], values[best])


def _serve() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer decides when we stop
    proto_in = sys.stdin.buffer
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt the protocol

    first = _receive(proto_in)
    if first is None or first[0] != "config":
        return 2
    config: TrackingConfig = first[1]

    # Read the pipe from the start: while the backend loads (importing a store can take
    # seconds) what the trainer ships is already safe here if the trainer dies.
    inbox: queue.Queue[Any] = queue.Queue(maxsize=256)  # bounded: a slow store backs up into the pipe

    def read_pipe() -> None:
        while True:
            message = _receive(proto_in)
            inbox.put(message)
            if message is None or message[0] == "close":
                return

    threading.Thread(target=read_pipe, name="mltrack-writer-reader", daemon=True).start()

    stats = WriterStats()
    backends, failure = _activate(config)
    sink = None
    if backends is not None:
        # Backends only: observers run in the training process (see ObservedSink).
        sink = HookSink(
            backends.backend_targets,
            stats,
            strict=config.strict,
            max_retries=config.max_retries,
            hook_timeout=config.hook_timeout,
            retry_window=config.retry_window,
        )
    open_runs = _OpenRuns()
    error: str | None = failure if config.strict else None
    goodbye = False
    while True:
        message = inbox.get()
        if message is None:
            break
        kind = message[0]
        if kind == "op":
            op: Op = message[1]
            open_runs.observe(op)
            if sink is None:  # the store never came up: every write is counted, none is lost silently
                stats.write_errors += 1
                stats.points_undelivered += op.points
                stats.last_error = failure
                continue
            try:
                sink.deliver(op)
            except Exception as exc:  # strict mode: reported with the next ack
                error = f"{type(exc).__name__}: {exc}"
        elif kind == "barrier":
            _send(proto_out, ("ack", message[1], _stats_dict(stats), error))
            error = None
        elif kind == "close":
            goodbye = True
            break
    if not goodbye and sink is not None:
        # The trainer died without saying goodbye: everything it shipped is stored; its
        # open runs did not finish.
        now = datetime.now(timezone.utc)
        for run_id, finals in list(open_runs.last.items()):
            try:
                sink.deliver(
                    Op(
                        "mltrack_finish_run",
                        {
                            "run_id": run_id,
                            "status": ExperimentStatus.CRASHED,
                            "end_time": now,
                            "final_metrics": {k: v for k, (_, v) in finals.items()},
                        },
                    )
                )
            except Exception as exc:
                log.error("mltrack: could not mark run %s crashed: %s", run_id, exc)
    if backends is not None:
        backends.close()
    return 0


def _activate(config: TrackingConfig) -> tuple[ActiveBackends | None, str | None]:
    """The configured backends, or why they could not start.

    A store that cannot be reached yet (a server restarting, a network blip) is retried for
    ``config.retry_window`` seconds, as writes are: what the trainer ships meanwhile waits in
    the pipe. Any other failure, or an outage longer than that, is returned, never raised:
    this process then counts every write as not stored, so the trainer's health says so.
    """
    from mltrack.plugins import get_plugin_host

    deadline = time.monotonic() + config.retry_window
    delay = 0.25
    while True:
        try:
            return get_plugin_host().activate(config, tolerate_secondary=not config.strict), None
        except Exception as exc:
            if _connection_error(exc) and time.monotonic() + delay < deadline:
                log.warning("mltrack: the store is not reachable yet (%s); retrying", exc)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            reason = f"the backend could not start in the writer process: {type(exc).__name__}: {exc}"
            log.error("mltrack: %s", reason)
            return None, reason


def _main() -> None:
    """Serve, then leave at once: every run is closed and stored by now, and a store's own
    exit handlers (Aim's remote-resource clean-up, say) can hang on a server that went away."""
    code = 1
    try:
        code = _serve()
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    _main()
