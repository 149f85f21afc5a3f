"""The writer process: stores what a training process ships to it, and outlives it.

The training process only appends to its buffer and ships batches through a pipe; this
process imports the backend, writes, and when the pipe closes without a goodbye (the
trainer was killed) it stores everything it received, marks the trainer's open runs
CRASHED and exits. The store's import cost and its Python work never touch the trainer.

Protocol: length-prefixed pickles. Trainer -> writer: ``("config", TrackingConfig)``,
``("spool", path)`` when the trainer spools (this process then records each stored
operation in the spool's ack file, and holds its lock while it lives), then ``("op", seq, Op)``, ``("barrier", n)``, ``("adopt", run_ids)`` (runs an earlier writer
created) and finally ``("close",)``. Writer -> trainer: ``("stored", seq, stats)`` once
operation ``seq`` is stored (the trainer keeps each operation until then, to send it again to
a new writer if this one dies), ``("ack", n, stats, error)`` once every operation before
barrier ``n`` is stored.
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
from collections import deque
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any

import attrs

from mltrack.config import TrackingConfig
from mltrack.errors import BackendError
from mltrack.models import MetricBatch, final_metric_key
from mltrack.writer import HookSink, Op, WriterStats, _connection_error, crashed_op

if TYPE_CHECKING:
    from mltrack.plugins import ActiveBackends
    from mltrack.spool import AckingSink

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


MAX_RESTARTS = 10
"""Writers in a row that die before storing anything, after which the trainer gives up (a crash loop)."""
RECOVER_WAIT = 30.0
"""Seconds a writer whose trainer died waits for the spool's lock (held by another process's scan)."""
_COUNTS = ("points_delivered", "points_undelivered", "write_errors", "retries", "points_waiting")


class ProcessSink:
    """Ships operations to a writer process and keeps each one until the writer says it is stored.

    The writer acknowledges every operation once stored. If it dies (killed, crashed), the
    pipe closes at once: a new writer is started, told which runs are open, and sent again
    every operation not acknowledged, in order (writes are idempotent: a point at a step
    replaces itself, a retried create carries on), so a writer's death loses nothing. A writer
    that keeps dying before storing anything (``MAX_RESTARTS`` in a row: a store that crashes its
    writer) is given up: what it holds is counted as not delivered.
    """

    def __init__(self, config: TrackingConfig, stats: WriterStats, spool_path: str | None = None) -> None:
        self._config = config
        self._spool_path = spool_path
        self._stats = stats
        self._lock = threading.RLock()  # the pipe to the writer, and replacing the writer
        self._cond = threading.Condition()  # acknowledgements: pending, barrier acks, stats
        self._pending: deque[tuple[int, Op]] = deque()
        self._pending_points = 0
        # Unacknowledged points held here are bounded like the buffer is: a store slower than the
        # trainer makes log calls wait (backpressure), it never grows memory without limit.
        self._max_pending_points = max(config.max_buffered_points, config.batch_size)
        self._open_runs: dict[str, None] = {}
        self._seq = 0
        self._barrier_seq = 0
        self._acked_barrier = 0
        self._ack_error: str | None = None
        self._generation = 0
        self._fruitless = 0  # writers in a row that died before storing anything
        self._stored_any = False  # the current writer acknowledged an operation
        self._closing = False
        self._gave_up: str | None = None
        self._proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
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
        if self._spool_path is not None:
            _send(proc.stdin, ("spool", self._spool_path))
        self._generation += 1
        threading.Thread(
            target=self._read_replies,
            args=(proc, self._generation),
            name="mltrack-writer-acks",
            daemon=True,
        ).start()
        return proc

    @property
    def pid(self) -> int:
        """The writer process's PID."""
        return self._proc.pid

    def deliver(self, op: Op) -> None:
        """Ship ``op``, keeping it until the writer acknowledges it; a dead writer is replaced."""
        with self._cond:
            while self._pending_points + op.points > self._max_pending_points and self._pending:
                self._cond.wait(0.5)
        with self._lock:
            if self._gave_up is not None:
                self._count_lost([op], self._gave_up)
                if self._config.strict:
                    raise BackendError(self._gave_up)
                return
            self._seq += 1
            with self._cond:
                self._pending.append((self._seq, op))
                self._pending_points += op.points
            if op.hook == "mltrack_create_run":
                self._open_runs[op.kwargs["run"].id] = None
            elif op.hook == "mltrack_resume_run":
                self._open_runs[op.kwargs["run_id"]] = None
            elif op.hook == "mltrack_finish_run":
                self._open_runs.pop(op.kwargs["run_id"], None)
            proc = self._proc
            try:
                assert proc.stdin is not None
                _send(proc.stdin, ("op", self._seq, op))
            except OSError as exc:
                self._replace(proc, f"{type(exc).__name__}: {exc}")

    def release_after_fork(self) -> None:
        """In a forked child: stop holding the parent's pipe to its writer (without writing to it).

        A child keeping the write end open would hide the parent's death from the writer (no
        end of file) until the child exits. The descriptors are pointed at /dev/null, so the
        file objects the child inherited can never flush a torn message into the pipe.
        """
        null = os.open(os.devnull, os.O_RDWR)
        try:
            for stream in (self._proc.stdin, self._proc.stdout):
                if stream is not None:
                    os.dup2(null, stream.fileno())
        finally:
            os.close(null)
        self._closing = True  # never replace or close the parent's writer from here

    def _read_replies(self, proc: subprocess.Popen[bytes], generation: int) -> None:
        """Take one writer's acknowledgements until its pipe closes; a close we did not ask for is a death."""
        assert proc.stdout is not None
        last = _stats_dict(WriterStats())  # what this writer counted so far (it starts from zero)
        while True:
            reply = _receive(proc.stdout)
            if reply is None:
                break
            with self._cond:
                if reply[0] == "stored":
                    self._stored_any = True
                    while self._pending and self._pending[0][0] <= reply[1]:
                        self._pending_points -= self._pending.popleft()[1].points
                    last = self._merge(reply[2], last)
                elif reply[0] == "ack":
                    last = self._merge(reply[2], last)
                    if reply[3] is not None:
                        self._ack_error = reply[3]
                    self._acked_barrier = max(self._acked_barrier, reply[1])
                self._cond.notify_all()
        if not self._closing:
            code = proc.wait()
            self._replace(proc, f"exit code {code}")

    def _replace(self, dead: subprocess.Popen[bytes], why: str) -> None:
        """Start a new writer in place of ``dead`` and send it everything not yet acknowledged."""
        with self._lock:
            if dead is not self._proc or self._gave_up is not None:
                return  # already replaced (the pipe and the reader both noticed)
            with self._cond:
                pending = list(self._pending)
                self._fruitless = 0 if self._stored_any else self._fruitless + 1
                self._stored_any = False
            if self._fruitless > MAX_RESTARTS:
                self._gave_up = (
                    f"writer process died {self._fruitless} times in a row before storing anything ({why})"
                )
                log.error("mltrack: %s; its writes are counted as not delivered", self._gave_up)
                with self._cond:
                    self._pending.clear()
                    self._pending_points = 0
                    self._cond.notify_all()
                self._count_lost([op for _, op in pending], self._gave_up)
                return
            self._stats.writer_restarts += 1
            if self._fruitless > 1:  # dying as it starts: do not spin, but keep everything
                time.sleep(min(0.25 * 2 ** (self._fruitless - 2), 1.0))
            created = {op.kwargs["run"].id for _, op in pending if op.hook == "mltrack_create_run"}
            created |= {op.kwargs["run_id"] for _, op in pending if op.hook == "mltrack_resume_run"}
            adopt = [run_id for run_id in self._open_runs if run_id not in created]
            points = sum(op.points for _, op in pending)
            log.warning(
                "mltrack: writer process %d died (%s); started a new one and sent it again the %d "
                "operations (%d points) not yet stored",
                dead.pid,
                why,
                len(pending),
                points,
            )
            self._proc = proc = self._start()
            try:
                assert proc.stdin is not None
                _send(proc.stdin, ("adopt", adopt))
                for seq, op in pending:
                    _send(proc.stdin, ("op", seq, op))
            except OSError as exc:  # died again at once: its reader will replace it
                log.error("mltrack: the new writer process failed at once: %s", exc)

    def _count_lost(self, ops: list[Op], why: str) -> None:
        with self._cond:
            for op in ops:
                self._stats.write_errors += 1
                self._stats.points_undelivered += op.points
            self._stats.last_error = why

    def barrier(self) -> None:
        """Wait until the writer process has stored everything shipped so far (across replacements)."""
        while True:
            with self._lock:
                if self._gave_up is not None:
                    break
                self._barrier_seq += 1
                seq, generation, proc = self._barrier_seq, self._generation, self._proc
                try:
                    assert proc.stdin is not None
                    _send(proc.stdin, ("barrier", seq))
                except OSError as exc:
                    self._replace(proc, f"{type(exc).__name__}: {exc}")
                    continue
            with self._cond:
                while self._acked_barrier < seq and self._generation == generation and self._gave_up is None:
                    self._cond.wait(0.5)
                if self._acked_barrier >= seq:
                    break
            # The writer was replaced while we waited: what it held was sent again; ask anew.
        with self._cond:
            error, self._ack_error = self._ack_error, None
        if error is not None:
            raise BackendError(error)

    def _merge(self, remote: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
        """Add what one writer counted since ``last`` (this process counts too: observers)."""
        stats = self._stats
        for key in _COUNTS:
            setattr(stats, key, getattr(stats, key) + remote[key] - last[key])
        stats.last_error = remote["last_error"] or stats.last_error
        for target, count in remote["errors_by_target"].items():
            before = last["errors_by_target"].get(target, 0)
            stats.errors_by_target[target] = stats.errors_by_target.get(target, 0) + count - before
        return remote

    def close(self) -> None:
        """Say goodbye (nothing is CRASHED) and wait for the writer to store everything and exit."""
        for _ in range(MAX_RESTARTS + 1):
            with self._lock:
                proc = self._proc
                self._closing = True
                try:
                    assert proc.stdin is not None
                    _send(proc.stdin, ("close",))
                    proc.stdin.close()
                except (OSError, ValueError):  # the writer is gone, or this sink was closed before
                    pass
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                log.error("mltrack: writer process %d did not exit; leaving it to finish", proc.pid)
                return
            with self._cond:
                left = bool(self._pending) and self._gave_up is None
            if not left:
                return
            # It died before storing everything it had: a new writer takes the rest.
            with self._lock:
                self._closing = False
                self._replace(proc, f"exit code {proc.returncode} while closing")


# --- the writer process's side ----------------------------------------------------------


class _OpenRuns:
    """Runs the trainer created and has not finished, with each metric's last value."""

    def __init__(self) -> None:
        self.last: dict[str, dict[str, tuple[int, float]]] = {}

    def observe(self, op: Op) -> None:
        if op.hook == "mltrack_create_run":
            self.last[op.kwargs["run"].id] = {}
        elif op.hook == "mltrack_resume_run":
            self.last[op.kwargs["run_id"]] = {}
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

    trainer_gone = False

    def reply(message: tuple[Any, ...]) -> None:
        nonlocal trainer_gone
        if trainer_gone:
            return
        try:
            _send(proto_out, message)
        except OSError:  # the trainer died: keep storing what it sent, then mark its runs
            trainer_gone = True

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
    spooled: AckingSink | None = None  # once the trainer names its spool
    spool_path: str | None = None
    error: str | None = failure if config.strict else None
    goodbye = False
    while True:
        try:
            message = inbox.get(timeout=1.0)
        except queue.Empty:
            if spooled is not None:
                spooled.tick()  # operations a store refused are tried again while idle too
            continue
        if message is None:
            break
        kind = message[0]
        if kind == "op":
            seq: int = message[1]
            op: Op = message[2]
            open_runs.observe(op)
            if sink is None:  # the store never came up: every write is counted, none is lost silently
                stats.write_errors += 1
                if spool_path is not None and op.seq:
                    stats.points_waiting += op.points  # in the spool: delivered once the store starts
                else:
                    stats.points_undelivered += op.points
                stats.last_error = failure
            else:
                try:
                    # With a spool, a stored operation is acknowledged there (recovery after a
                    # group kill starts after it), and one a store refused waits there, retried.
                    (spooled or sink).deliver(op)
                except Exception as exc:  # strict mode: reported with the next ack
                    error = f"{type(exc).__name__}: {exc}"
            reply(("stored", seq, _stats_dict(stats)))  # the trainer may let it go (it is spooled)
        elif kind == "adopt":
            # Runs an earlier writer process created, open still: crash-mark them if the trainer
            # dies, and open them here now (an empty params merge) so their liveness names us.
            for run_id in message[1]:
                open_runs.last.setdefault(run_id, {})
                if sink is not None:
                    try:
                        sink.deliver(Op("mltrack_log_params", {"run_id": run_id, "params": {}}))
                    except Exception as exc:
                        error = f"{type(exc).__name__}: {exc}"
        elif kind == "spool":
            from mltrack.spool import AckingSink, AckLog

            spool_path = message[1]
            try:
                acks = AckLog(message[1])
            except OSError as exc:
                log.error("mltrack: cannot open the spool's ack file: %s", exc)
            else:
                if sink is not None:
                    spooled = AckingSink(
                        sink, acks, spool_path=spool_path, stats=stats, max_points=config.max_buffered_points
                    )
                else:
                    acks.close()
        elif kind == "barrier":
            reply(("ack", message[1], _stats_dict(stats), error))
            error = None
        elif kind == "close":
            goodbye = True
            break
    if spooled is not None:
        spooled.tick(force=True)  # one last try; what a store still refuses stays in the spool
    if not goodbye and spooled is not None and spool_path is not None:
        # The trainer died. Its spool holds every operation it sealed, also those it never
        # shipped here: recovery delivers what no store acknowledged, then marks its open
        # runs CRASHED, once, with the last values logged.
        spooled.close()
        _close_bounded(backends, config.hook_timeout)
        _recover_spool(spool_path)
        return 0
    if not goodbye and sink is not None:
        # The trainer died without saying goodbye: everything it shipped is stored; its
        # open runs did not finish.
        now = datetime.now(timezone.utc)
        for run_id, finals in list(open_runs.last.items()):
            try:
                sink.deliver(crashed_op(run_id, finals, now))
            except Exception as exc:
                log.error("mltrack: could not mark run %s crashed: %s", run_id, exc)
    if spooled is not None:
        spooled.close()
    if backends is not None:
        _close_bounded(backends, config.hook_timeout)
    return 0


def _close_bounded(backends: ActiveBackends | None, timeout: float | None) -> None:
    """Close the stores, waiting at most ``timeout`` seconds (a store wedged by a full disk never returns).

    Everything they did not store is in the spool by now (or counted without one), so a
    wedged store is left behind rather than keeping this process, and its trainer, waiting.
    """
    if backends is None:
        return
    closer = threading.Thread(target=backends.close, name="mltrack-close", daemon=True)
    closer.start()
    closer.join(timeout if timeout else None)
    if closer.is_alive():
        log.error("mltrack: a store did not close within %g s; leaving it", timeout)


def _recover_spool(path: str) -> None:
    from pathlib import Path

    from mltrack.spool import recover

    try:
        # Another mltrack process scanning the spools holds its lock for a moment (and one
        # recovering it, until done): wait for it rather than leave the runs unfinished.
        recover(Path(path), wait=RECOVER_WAIT)
    except Exception as exc:  # the next mltrack process or `mltrack sync` tries again
        log.error("mltrack: could not deliver the spool %s (its runs read CRASHED once it is): %s", path, exc)


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
