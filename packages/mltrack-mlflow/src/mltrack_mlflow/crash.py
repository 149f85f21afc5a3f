"""Whether the process writing a RUNNING run still lives, from the run's ``mltrack.writer`` tag.

Each writer tags the runs it writes with ``<host> <pid> <start ticks> <pid namespace>``; a
reader on the same host checks that process (the start time tells a reused pid apart, the
namespace a container's pid from the host's: see :class:`mltrack.authoring.WriterRecord`).
A run written on another host cannot be judged from here.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from mltrack.authoring import WriterRecord
from mltrack_mlflow import mapping as m

__all__ = ["HOST", "WRITER", "writer_gone"]


def _process_ticks(pid: int) -> str:
    """The process's start time in clock ticks (Linux), so a reused pid is not taken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def _process_alive(pid: int, ticks: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: the pid exists, which is all we can tell
    rest = stat[stat.rfind(")") + 2 :].split()
    if rest and rest[0] in ("Z", "X"):
        return False  # a zombie wrote its last
    return not ticks or len(rest) <= 19 or rest[19] == ticks


HOST = socket.gethostname()
_ME = WriterRecord.current()
WRITER = f"{HOST} {_ME.pid} {_ME.started} {_ME.pid_namespace}".rstrip()
"""This process as a run's writer: the value of the ``mltrack.writer`` tag."""


def writer_gone(tags: Mapping[str, str]) -> bool:
    """True if the run's writer process was on this host and is gone."""
    writer = tags.get(m.WRITER_TAG, "").split()
    if len(writer) < 2 or writer[0] != HOST or not writer[1].isdigit():
        return False  # written elsewhere: this host cannot tell whether its writer lives
    if len(writer) > 3:  # tagged with its PID namespace: a container's writer is found from the host
        return WriterRecord(writer[0], int(writer[1]), writer[2], writer[3]).is_gone()
    return not _process_alive(int(writer[1]), writer[2] if len(writer) > 2 else "")
