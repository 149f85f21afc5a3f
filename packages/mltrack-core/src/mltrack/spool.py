"""The local spool: every operation on local disk before the store sees it, until the store has it.

A trainer's writer appends each operation it hands on (a run created, a batch of points, a
finish) to an append-only file of its own, *before* any store is asked to take it; whoever
stores it (the writer process, or the writer thread) then appends the operation's sequence
number to a sidecar *ack* file. So when trainer and writer process die together (Slurm's
``scancel``, a container OOM kill), when the store is down past the retry window, when its disk
is full, or when ``MLTRACK_OFFLINE=1`` asks for no store at all, what was logged is on local
disk, and the operations not acknowledged are delivered later, in order, by the next mltrack
process (in the background) or by ``mltrack sync``; runs left open are then marked CRASHED.

Files, in ``MLTRACK_SPOOL_DIR`` (default ``~/.cache/mltrack/spool``, on local disk: not
beside the store, whose disk may be the one that is full):

* ``<name>.spool``: records ``length (4 bytes) + crc32 (4 bytes) + pickle``; the first is the
  header (the store configuration, the owner), then ``(seq, Op)``. A torn tail or a record whose
  checksum does not match ends the file for a reader (what follows cannot be trusted).
* ``<name>.ack``: 12-byte records ``seq (8) + crc32 (4)``: the operations stored.
* ``<name>.lock``: held (``flock``) by the trainer and its writer process while either lives; a
  reader that can take it exclusively knows the owners are gone, whatever their PIDs now are.

The spool holds at most ``MLTRACK_SPOOL_MAX_BYTES``: once everything in it is acknowledged it
is rewritten with only what recovery needs (the runs still open and their last values); an
operation that would not fit even then is not spooled, which is counted
(``points_not_spooled``), logged once and shown by ``health_check()``: it still reaches the
store the usual way, it is only not protected against a kill of the whole process group.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import attrs

from mltrack.models import MetricBatch, final_metric_key
from mltrack.writer import HookSink, Op, WriterStats, crashed_op

__all__ = [
    "AckLog",
    "AckingSink",
    "PendingSpool",
    "Spool",
    "SpoolOnlySink",
    "default_spool_dir",
    "mentions",
    "pending_spools",
    "points_waiting",
    "read_records",
    "recover",
    "sync_spools",
]

log = logging.getLogger("mltrack")

_RECORD = struct.Struct("!II")  # payload length, crc32 of the payload
_ACK = struct.Struct("!QI")  # seq, crc32 of the seq's 8 bytes
_SEQ = struct.Struct("!Q")
SUFFIX = ".spool"
FORMAT_VERSION = 1
DELIVERED_TAG = "mltrack:spool-delivered-points"
"""A run some of whose points recovery delivered from a spool is tagged ``<this>=<count>``."""


def default_spool_dir() -> Path:
    """``MLTRACK_SPOOL_DIR``, else ``~/.cache/mltrack/spool`` (a per-user folder on local disk)."""
    from mltrack.settings import env

    configured = env("MLTRACK_SPOOL_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path(os.path.expanduser("~")) / ".cache" / "mltrack" / "spool"


# --- the file format ---------------------------------------------------------------------


def encode_record(obj: object) -> bytes:
    """One record: length, crc32 and the pickle of ``obj``."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


def _check_private(path: Path) -> None:
    """Refuse a spool file another user owns, or one in a folder others may write to."""
    uid = os.geteuid()
    for what in (path, path.parent):
        info = what.stat()
        if info.st_uid != uid:
            raise PermissionError(f"{what} belongs to uid {info.st_uid}, not to this user: not read")
    if path.parent.stat().st_mode & 0o022:
        raise PermissionError(f"{path.parent} may be written by other users: its spools are not read")


def read_records(path: Path | str) -> tuple[list[Any], int]:
    """Every intact record of a spool file, in order, and how many bytes at its end were not.

    Reading stops at a torn record (the writer was killed while appending) or at one whose
    checksum does not match (the length cannot be trusted either): what follows is ignored.
    Records are pickles, so only a file this user owns, in a folder no one else may write to,
    is read (:class:`PermissionError` otherwise): a spool planted in a shared folder is never loaded.
    """
    _check_private(Path(path))
    data = Path(path).read_bytes()
    out: list[Any] = []
    pos = 0
    end = len(data)
    while pos + _RECORD.size <= end:
        size, crc = _RECORD.unpack_from(data, pos)
        start = pos + _RECORD.size
        if start + size > end:
            break
        payload = data[start : start + size]
        if zlib.crc32(payload) != crc:
            break
        try:
            out.append(pickle.loads(payload))
        except Exception:  # a record that checks out but does not load: treat like a bad checksum
            break
        pos = start + size
    return out, end - pos


def _read_acks(path: Path, offset: int = 0) -> tuple[set[int], int]:
    """Sequence numbers acknowledged in an ack file from ``offset``, and where reading stopped."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return set(), offset
    acked: set[int] = set()
    pos = 0
    while pos + _ACK.size <= len(data):
        seq, crc = _ACK.unpack_from(data, pos)
        if zlib.crc32(_SEQ.pack(seq)) == crc:
            acked.add(seq)
        pos += _ACK.size
    return acked, offset + pos


def _paths(spool: Path) -> tuple[Path, Path]:
    base = spool.with_suffix("")
    return base.with_name(base.name + ".ack"), base.with_name(base.name + ".lock")


def _write_file(path: Path, data: bytes) -> None:
    """Write a new file only its owner may read (points and configs are the user's)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _lock(path: Path, exclusive: bool) -> int | None:
    """An ``flock`` on ``path`` (created if missing): its descriptor, or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


class AckLog:
    """The ack file of one spool, appended to by whoever stores its operations.

    Opening it also holds the spool's lock (shared), so a reader knows an owner still lives.
    """

    def __init__(self, spool_path: Path | str) -> None:
        ack, lock = _paths(Path(spool_path))
        self._lock_fd = _lock(lock, exclusive=False)
        self._fd = os.open(ack, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.failed = False

    def add(self, seqs: Sequence[int]) -> None:
        """Record ``seqs`` as stored (one write; a failure only means they may be sent twice)."""
        if not seqs or self.failed:
            return
        data = b"".join(_ACK.pack(s, zlib.crc32(_SEQ.pack(s))) for s in seqs)
        try:
            os.write(self._fd, data)
        except OSError as exc:  # the spool's disk is full: replay re-sends, stores take it again
            self.failed = True
            log.error("mltrack: could not record stored operations in the spool: %s", exc)

    def release_after_fork(self) -> None:
        """In a forked child: close the inherited descriptors (the parent keeps its lock)."""
        self.failed = True
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._lock_fd = None

    def close(self) -> None:
        """Release the file and the lock."""
        os.close(self._fd)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _opened_run(op: Op) -> str | None:
    """The run an operation opens (created, or resumed: either is left open by a kill), else None."""
    if op.hook == "mltrack_create_run":
        return str(op.kwargs["run"].id)
    if op.hook == "mltrack_resume_run":
        return str(op.kwargs["run_id"])
    return None


# --- the trainer's side -------------------------------------------------------------------


class Spool:
    """One trainer session's spool file: operations appended before any store is asked."""

    def __init__(self, directory: Path, config: Any, *, max_bytes: int, offline: bool = False) -> None:
        from mltrack.authoring import WriterRecord

        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path = directory / (name + SUFFIX)
        self.ack_path, self.lock_path = _paths(self.path)
        self.max_bytes = max_bytes
        self.offline = offline
        self._lock_fd = _lock(self.lock_path, exclusive=False)
        self._header = encode_record(
            {
                "format": FORMAT_VERSION,
                "config": config,
                "owner": WriterRecord.current().to_text(),
                "offline": offline,
                "created": time.time(),
            }
        )
        # Written aside and renamed into place: a reader never sees a spool without its header.
        tmp = self.path.with_name("." + self.path.name + ".tmp")
        _write_file(tmp, self._header)
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(self._header)
        self._unacked: dict[int, int] = {}  # seq -> points, spooled and not known stored
        self._ack_offset = 0
        self._open_creates: dict[str, Op] = {}  # create ops of runs still open
        self.points_not_spooled = 0
        self.failed: str | None = None
        """Why the last write to the spool failed (its disk full); tried again after 5 s."""
        self._retry_at = 0.0
        self._told_full = False
        self._mutex = threading.Lock()

    # The spooler thread appends; health_check reads the counts.
    def append(self, items: Sequence[tuple[int, Op]], finals: Any = None) -> None:
        """Append ``items`` (seq, op) in one write; past the bound, compact or count them.

        ``finals``: the open runs' last values (``{run_id: {metric: value}}``, or a function
        answering them), kept in a compacted file so recovery can still mark runs CRASHED with them.
        """
        if not items:
            return
        with self._mutex:
            for _, op in items:
                opened = _opened_run(op)
                if opened is not None:
                    self._open_creates[opened] = op
                elif op.hook == "mltrack_finish_run":
                    self._open_creates.pop(op.kwargs["run_id"], None)
            if self.failed is not None and time.monotonic() < self._retry_at:
                self.points_not_spooled += sum(op.points for _, op in items)
                return
            data = b"".join(encode_record((seq, op)) for seq, op in items)
            if self._size + len(data) > self.max_bytes and not self._compact(finals, len(data)):
                self.points_not_spooled += sum(op.points for _, op in items)
                if not self._told_full:
                    self._told_full = True
                    log.warning(
                        "mltrack: the spool %s reached MLTRACK_SPOOL_MAX_BYTES=%d with operations not yet "
                        "stored; new points go to the store unspooled (a kill of trainer and writer "
                        "together can lose them) until the store catches up",
                        self.path,
                        self.max_bytes,
                    )
                return
            try:
                written = os.write(self._fd, data)
                if written != len(data):
                    raise OSError(f"short write ({written} of {len(data)} bytes)")
            except OSError as exc:  # the spool's own disk is full: say so, keep training
                try:  # no torn record left in the middle: later ones must stay readable
                    os.ftruncate(self._fd, self._size)
                except OSError:
                    pass
                if self.failed is None:
                    log.error(
                        "mltrack: cannot write the spool %s (%s); points are not spooled until it can",
                        self.path,
                        exc,
                    )
                self.failed = f"{type(exc).__name__}: {exc}"
                self._retry_at = time.monotonic() + 5.0
                self.points_not_spooled += sum(op.points for _, op in items)
                return
            self.failed = None
            self._size += len(data)
            for seq, op in items:
                self._unacked[seq] = op.points

    def _refresh_acks(self) -> None:
        acked, self._ack_offset = _read_acks(self.ack_path, self._ack_offset)
        for seq in acked:
            self._unacked.pop(seq, None)

    def _compact(self, finals: Any, extra: int) -> bool:
        """Rewrite the file with the open runs only, if everything in it is stored (lock held)."""
        self._refresh_acks()
        if self._unacked:
            return False
        values = finals() if callable(finals) else finals
        state = encode_record(("state", list(self._open_creates.values()), values or {}))
        if len(self._header) + len(state) + extra > self.max_bytes:
            return False
        tmp = self.path.with_name("." + self.path.name + ".tmp")
        _write_file(tmp, self._header + state)
        os.replace(tmp, self.path)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = len(self._header) + len(state)
        return True

    def release_after_fork(self) -> None:
        """In a forked child: let go of the parent's files, so its lock dies with the parent."""
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._lock_fd = None

    def pending(self) -> tuple[int, int]:
        """Operations and points spooled and not yet known stored."""
        with self._mutex:
            self._refresh_acks()
            return len(self._unacked), sum(self._unacked.values())

    def close(self) -> int:
        """Done: delete the files if the store has everything; else keep them for recovery.

        Returns the points kept (0 when deleted).
        """
        _, points = self.pending()
        with self._mutex:
            os.close(self._fd)
            if self._unacked or self.offline:
                ops = len(self._unacked)
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                if self.offline:
                    log.warning(
                        "mltrack: offline: %d operations (%d points) kept in %s; `mltrack sync` delivers them",
                        ops,
                        points,
                        self.path,
                    )
                else:
                    log.warning(
                        "mltrack: %d operations (%d points) were not stored; they are kept in %s and "
                        "delivered by the next mltrack process or `mltrack sync`",
                        ops,
                        points,
                        self.path,
                    )
                return points
            for p in (self.path, self.ack_path):
                p.unlink(missing_ok=True)
            self.lock_path.unlink(missing_ok=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            return 0


class AckingSink:
    """A sink that records in the spool's ack file each operation the primary backend stored.

    Wraps the :class:`HookSink` that calls the backends (in the writer process, or in the
    trainer's writer thread). An operation a store did not take (down past the retry window,
    disk full) is not lost: it is in the spool, so it waits there, and every later operation
    waits behind it (order is kept), while training goes on; every ``retry_every`` seconds the
    oldest is tried again, and once the store takes it the rest follow. At most
    ``max_points`` of them are held in memory too; the others are read back from the spool
    file. What still waits when the session ends stays in the spool, for the next process or
    ``mltrack sync``.
    """

    def __init__(
        self,
        inner: HookSink,
        acks: AckLog,
        *,
        spool_path: Path | str | None = None,
        stats: WriterStats | None = None,
        max_points: int = 1_000_000,
        retry_every: float = 2.0,
    ) -> None:
        self.inner = inner
        self.acks = acks
        self._spool_path = None if spool_path is None else Path(spool_path)
        self._stats = stats
        self._max_points = max_points
        self._retry_every = retry_every
        self._backlog: deque[tuple[int, Op | None, int]] = deque()  # seq, op (None: on disk only), points
        self._held_points = 0
        self._next_try = 0.0

    @property
    def waiting(self) -> int:
        """Operations a store has not taken yet, in order behind the first it refused."""
        return len(self._backlog)

    def deliver(self, op: Op) -> None:
        if self._backlog:
            self._hold(op)
            self.tick()
            return
        self.inner.deliver(op)
        if not op.seq:
            return
        if not self.inner.primary_failed:
            # Stored by the primary. A fan-out secondary that missed it is counted and the run
            # tagged, as before the spool: a broken secondary must not hold the primary's data.
            self.acks.add((op.seq,))
        else:
            self._hold(op)
            if self._stats is not None:  # counted as not stored by HookSink: it waits instead
                self._stats.points_undelivered -= op.points
            self._next_try = time.monotonic() + self._retry_every

    def _hold(self, op: Op) -> None:
        if not op.seq:  # not in the spool (past its bound): HookSink counted it, as before
            if self._backlog:
                self.inner.deliver(op)
            return
        keep = self._held_points + op.points <= self._max_points
        self._backlog.append((op.seq, op if keep else None, op.points))
        if keep:
            self._held_points += op.points
        if self._stats is not None:
            self._stats.points_waiting += op.points

    def tick(self, force: bool = False) -> None:
        """Try the waiting operations again if it is time (``force``: now); they go in order."""
        if not self._backlog or (not force and time.monotonic() < self._next_try):
            return
        self._load_from_disk()
        while self._backlog:
            seq, op, points = self._backlog[0]
            if op is None:  # the spool file did not have it (a torn record): nothing more to do
                self._backlog.popleft()
                continue
            if not self.inner.redeliver(op):
                self._next_try = time.monotonic() + self._retry_every
                return
            self.acks.add((seq,))
            self._backlog.popleft()
            self._held_points -= points
            if self._stats is not None:
                self._stats.points_waiting -= points
            self._load_from_disk()

    def _load_from_disk(self) -> None:
        """Read back from the spool file the waiting operations not held in memory (the next ones)."""
        if not self._backlog or self._backlog[0][1] is not None or self._spool_path is None:
            return
        wanted = {seq for seq, op, _ in self._backlog if op is None}
        room = self._max_points
        found: dict[int, Op] = {}
        try:
            records, _ = read_records(self._spool_path)
        except OSError as exc:
            log.error("mltrack: cannot read the spool back: %s", exc)
            records = []
        for record in records[1:]:
            if record[0] in wanted and isinstance(record[1], Op) and room >= 0:
                found[record[0]] = record[1]
                room -= record[1].points
        self._backlog = deque(
            (seq, op if op is not None else found.get(seq), p) for seq, op, p in self._backlog
        )
        self._held_points = sum(p for _, op, p in self._backlog if op is not None)

    def release_after_fork(self) -> None:
        """In a forked child: let go of the parent's ack file and lock."""
        self.acks.release_after_fork()

    def barrier(self) -> None:
        """Wait for what the stores took; operations waiting for a store are safe in the spool."""
        self.inner.barrier()

    def close(self) -> None:
        """One last try of what waits (the rest stays in the spool), then release the files."""
        if self._backlog:
            self.tick(force=True)
        if self._backlog:
            points = sum(p for _, _, p in self._backlog)
            log.warning(
                "mltrack: %d operations (%d points) a store did not take stay in the spool %s; the next "
                "mltrack process or `mltrack sync` delivers them",
                len(self._backlog),
                points,
                self._spool_path,
            )
        self.inner.close()
        self.acks.close()


class SpoolOnlySink:
    """``MLTRACK_OFFLINE=1``: the spool is the only destination; `mltrack sync` delivers later."""

    def deliver(self, op: Op) -> None:
        """Nothing to do: the writer spooled ``op`` before handing it here."""

    def barrier(self) -> None:
        """Nothing to wait for."""

    def close(self) -> None:
        """Nothing to release."""


# --- recovery -----------------------------------------------------------------------------


@attrs.frozen
class PendingSpool:
    """A spool file found on disk: whose, and what it still holds for the store."""

    path: Path
    owner: str
    owner_alive: bool
    offline: bool
    backends: tuple[str, ...]
    operations: int
    points: int
    open_runs: tuple[str, ...]
    torn_bytes: int


def _spool_files(directory: Path) -> Iterator[Path]:
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(SUFFIX) and not name.startswith("."):
            yield directory / name


class _Contents:
    """What a spool file holds for recovery."""

    def __init__(self, path: Path) -> None:
        records, self.torn = read_records(path)
        ack, _ = _paths(path)
        self.acked, _ = _read_acks(ack)
        self.header: dict[str, Any] = records[0] if records and isinstance(records[0], dict) else {}
        self.open: dict[str, Op] = {}
        self.finals: dict[str, dict[str, tuple[int, float]]] = {}
        self.todo: list[tuple[int, Op]] = []
        for record in records[1:]:
            if record[0] == "state":
                for op in record[1]:
                    self.open[_opened_run(op) or ""] = op
                for run_id, values in record[2].items():
                    self.finals[run_id] = {k: (-1, v) for k, v in values.items()}
                continue
            seq, op = record
            self._observe(op)
            if seq not in self.acked:
                self.todo.append((seq, op))

    def _observe(self, op: Op) -> None:
        opened = _opened_run(op)
        if opened is not None:
            self.open[opened] = op
            self.finals.setdefault(opened, {})
        elif op.hook == "mltrack_finish_run":
            self.open.pop(op.kwargs["run_id"], None)
        elif op.hook == "mltrack_log_metrics":
            finals = self.finals.setdefault(op.kwargs["run_id"], {})
            batch: MetricBatch = op.kwargs["batch"]
            for name, ctx, steps, values, _ in batch.groups():
                key = final_metric_key(name, tuple(sorted(ctx.items())))
                best = max(range(len(steps)), key=steps.__getitem__)
                prev = finals.get(key)
                if prev is None or steps[best] >= prev[0]:
                    finals[key] = (steps[best], values[best])


def _describe(path: Path, alive: bool) -> PendingSpool | None:
    try:
        contents = _Contents(path)
    except OSError:
        return None
    config = contents.header.get("config")
    return PendingSpool(
        path=path,
        owner=str(contents.header.get("owner", "")),
        owner_alive=alive,
        offline=bool(contents.header.get("offline", False)),
        backends=tuple(getattr(config, "backends", ()) or ()),
        operations=len(contents.todo),
        points=sum(op.points for _, op in contents.todo),
        open_runs=tuple(contents.open),
        torn_bytes=contents.torn,
    )


def mentions(path: Path, text: str) -> bool:
    """Whether the file holds ``text`` (ASCII) anywhere: the pickled records of a spool name their runs."""
    import mmap

    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(text.encode()) >= 0
    except (OSError, ValueError):  # gone meanwhile, or empty
        return False


def points_waiting(run_id: str, directory: Path | None = None) -> dict[Path, int]:
    """Points of run ``run_id`` that spools on this machine hold and no store has taken yet, by file.

    What ``mltrack show`` reports while a store refuses them (disk full, down past the retry
    window) or after a kill, until the writer, the next process or ``mltrack sync`` delivers them.
    """
    out: dict[Path, int] = {}
    for path in _spool_files(directory or default_spool_dir()):
        if not mentions(path, run_id):
            continue  # a byte search, far cheaper than reading the records
        try:
            contents = _Contents(path)
        except OSError:  # gone meanwhile, or not this user's to read
            continue
        points = sum(op.points for _, op in contents.todo if op.kwargs.get("run_id") == run_id)
        if points:
            out[path] = points
    return out


def pending_spools(directory: Path | None = None) -> list[PendingSpool]:
    """Every spool file in ``directory`` (default: :func:`default_spool_dir`), oldest first."""
    directory = directory or default_spool_dir()
    out = []
    for path in _spool_files(directory):
        _, lock = _paths(path)
        fd = _lock(lock, exclusive=True)
        if fd is not None:
            os.close(fd)
        described = _describe(path, alive=fd is None)
        if described is not None:
            out.append(described)
    return out


def recover(path: Path, *, config: Any = None, wait: float = 0.0) -> tuple[int, int, list[str]]:
    """Deliver what one spool holds whose owners are gone; returns (operations, points, runs crashed).

    Runs under the spool's lock (taken exclusively, so owners and other recoveries keep out;
    ``wait`` seconds are given to whoever holds it, as another process's scan does for a moment).
    Operations not acknowledged are delivered in order into the stores the spool was written
    for (``config`` overrides them); a run created and never finished is then marked CRASHED
    with the last values logged; then the files are deleted. Raises :class:`RuntimeError` if an
    owner still lives, and :class:`mltrack.errors.BackendError` if a store does not take an
    operation (what was delivered up to there is acknowledged, the rest kept).
    """
    from mltrack.errors import BackendError
    from mltrack.plugins import get_plugin_host

    ack_path, lock_path = _paths(path)
    fd = _lock(lock_path, exclusive=True)
    deadline = time.monotonic() + wait
    while fd is None and time.monotonic() < deadline:
        time.sleep(0.05)
        fd = _lock(lock_path, exclusive=True)
    if fd is None:
        raise RuntimeError(f"{path}: its trainer or writer process is still running")
    try:
        if not path.exists():  # recovered meanwhile by someone else
            return 0, 0, []
        contents = _Contents(path)
        target = config if config is not None else contents.header.get("config")
        if target is None:
            raise BackendError(f"{path}: no readable header; cannot tell which store it belongs to")
        if config is None and contents.acked and not contents.header.get("offline"):
            # The store took some of this spool already: if it is gone now (deleted), it is not
            # created again empty to take the rest; sync says so instead.
            target = attrs.evolve(target, must_exist=True)
        delivered = points = 0
        crashed: list[str] = []
        if contents.todo or contents.open:
            stats = WriterStats()
            backends = get_plugin_host().activate(target, tolerate_secondary=True)
            try:
                sink = HookSink(
                    backends.backend_targets,
                    stats,
                    max_retries=target.max_retries,
                    retry_window=min(target.retry_window, 5.0),
                    hook_timeout=target.hook_timeout,
                )
                acks = AckLog(path)
                late: dict[str, int] = {}
                try:
                    for seq, op in contents.todo:
                        sink.deliver(op)
                        if sink.primary_failed:  # a secondary's miss is counted and logged, as in a run
                            raise BackendError(
                                f"{path}: the store did not take operation {seq} ({op.hook}): "
                                f"{stats.last_error}; {len(contents.todo) - delivered} operations kept"
                            )
                        acks.add((seq,))
                        delivered += 1
                        points += op.points
                        run_id = op.kwargs.get("run_id")
                        if op.points and isinstance(run_id, str):
                            late[run_id] = late.get(run_id, 0) + op.points
                    for run_id, count in () if contents.header.get("offline") else late.items():
                        # The run says some of its points arrived late (offline runs all do).
                        sink.deliver(
                            Op("mltrack_set_tags", {"run_id": run_id, "tags": (f"{DELIVERED_TAG}={count}",)})
                        )
                    now = datetime.now(timezone.utc)
                    for run_id in list(contents.open):
                        finals = contents.finals.get(run_id, {})
                        sink.deliver(crashed_op(run_id, finals, now))
                        if sink.primary_failed:  # a secondary's miss is counted and logged, as in a run
                            raise BackendError(
                                f"{path}: could not mark run {run_id} crashed: {stats.last_error}"
                            )
                        crashed.append(run_id)
                finally:
                    acks.close()
            finally:
                backends.close()
        for p in (path, ack_path, _error_path(path)):
            p.unlink(missing_ok=True)
        lock_path.unlink(missing_ok=True)
        return delivered, points, crashed
    finally:
        os.close(fd)


def sync_spools(
    directory: Path | None = None, *, include_offline: bool = True
) -> list[tuple[PendingSpool, Any]]:
    """Recover every spool whose owners are gone; each with its result or the error it met."""
    out: list[tuple[PendingSpool, Any]] = []
    for spool in pending_spools(directory):
        if spool.owner_alive or (spool.offline and not include_offline):
            continue
        try:
            out.append((spool, recover(spool.path)))
        except Exception as exc:
            out.append((spool, exc))
    return out


RETRY_AFTER = 300.0
"""Seconds before background recovery tries again a spool it could not deliver (``mltrack sync`` always tries)."""


def _error_path(path: Path) -> Path:
    return path.with_name(path.name + ".error")


def orphaned(directory: Path) -> bool:
    """Whether a spool left by dead owners (not offline ones) waits in ``directory``: a cheap scan."""
    for path in _spool_files(directory):
        try:
            if time.time() - _error_path(path).stat().st_mtime < RETRY_AFTER:
                continue  # failed a moment ago (store still down, backend not installed here)
        except FileNotFoundError:
            pass
        _, lock = _paths(path)
        fd = _lock(lock, exclusive=True)
        if fd is not None:
            os.close(fd)
            try:
                with open(path, "rb") as fh:
                    head = fh.read(_RECORD.size)
                    size, _ = _RECORD.unpack(head)
                    header = pickle.loads(fh.read(size))
                if not header.get("offline"):
                    return True
            except Exception:
                return True
    return False


def recover_in_background(directory: Path) -> None:
    """Start a detached process delivering spools whose owners died, if there is any (a thread scans)."""

    def scan() -> None:
        try:
            if not orphaned(directory):
                return
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            env["MLTRACK_SPOOL_DIR"] = str(directory)
            subprocess.Popen(
                [sys.executable, "-m", "mltrack.spool"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except Exception as exc:  # recovery is best effort here; `mltrack sync` reports errors
            log.warning("mltrack: could not start delivering spooled points in the background: %s", exc)

    threading.Thread(target=scan, name="mltrack-spool-scan", daemon=True).start()


def _main() -> int:
    """Background recovery: deliver spools of dead owners (not offline ones), log what happened."""
    logging.basicConfig(level=logging.INFO, format="mltrack sync: %(message)s")
    for spool, result in sync_spools(include_offline=False):
        if isinstance(result, Exception):
            log.error("%s: %s", spool.path, result)
            try:
                _error_path(spool.path).write_text(f"{type(result).__name__}: {result}\n")
            except OSError:
                pass
        else:
            ops, points, crashed = result
            log.info("%s: delivered %d operations (%d points); crashed: %s", spool.path, ops, points, crashed)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
