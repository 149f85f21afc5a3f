"""The publisher process: encodes what a training process hands over and sends it to Redis.

Encoding a flush as JSON and talking to Redis costs CPU under Python's interpreter lock; done
in the training process, a loop logging a million points a second ran ~40% slower. So the
training process only pickles each hook's arguments (arrays pickle as bytes) into this
process's stdin, as mltrack's writer process does, and this process runs the
:class:`~mltrack_redis.publisher.Publisher` (bounded buffer, heartbeats, reconnects).

Protocol (length-prefixed pickles, trainer -> here): ``("config", dict)`` first, then
``("ops", [(kind, run_id, payload, points), ...])``, ``("sync", seq, timeout)`` and
``("close", timeout)``. Here -> trainer: one JSON line per report, ``{"ack": seq | null,
"stats": {...}}``. Only the training process that started this one writes to its stdin; end
of input without ``close`` means it died: the heartbeats stop, so its runs are announced
crashed, and this process exits.
"""

from __future__ import annotations

import json
import pickle
import signal
import struct
import sys
import threading
from typing import IO, Any

import attrs

_HEADER = struct.Struct("!I")
STATS_EVERY = 0.5
"""Seconds between two reports of the counters to the training process."""


def send(stream: IO[bytes], message: Any) -> None:
    """Write one length-prefixed pickle."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    """The next message from the training process that started this one, or None at end of input."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = stream.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)  # our own parent's pipe, never anything read from Redis


def main() -> int:
    """Serve one training process until it closes (or dies)."""
    from mltrack_redis.publisher import Publisher

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends when the training process closes or dies
    inbox, out = sys.stdin.buffer, sys.stdout
    first = receive(inbox)
    if first is None or first[0] != "config":
        return 2
    publisher = Publisher(**first[1])
    lock = threading.Lock()
    done = threading.Event()

    def report(ack: int | None = None) -> None:
        stats = attrs.asdict(publisher.stats)
        stats["buffered_events"] = publisher.buffered
        with lock:
            out.write(json.dumps({"ack": ack, "stats": stats}) + "\n")
            out.flush()

    def report_often() -> None:
        while not done.wait(STATS_EVERY):
            try:
                report()
            except (BrokenPipeError, OSError, ValueError):
                return

    threading.Thread(target=report_often, name="mltrack-redis-stats", daemon=True).start()
    closing_timeout = 1.0
    try:
        while True:
            message = receive(inbox)
            if message is None:  # the training process is gone: stop its heartbeats now
                break
            kind = message[0]
            if kind == "ops":
                for op in message[1]:
                    publisher.submit(*op)
            elif kind == "sync":
                publisher.wait_sent(message[2])
                report(ack=message[1])
            elif kind == "close":
                closing_timeout = message[1]
                break
    finally:
        publisher.close(timeout=closing_timeout)
        done.set()
        try:
            report()
        except (BrokenPipeError, OSError, ValueError):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
