"""Whether the process writing a RUNNING run still lives, from the run's ``mltrack.writer`` tag.

Each writer tags the runs it writes with ``<host> <pid> <start ticks> <pid namespace>``; a
reader on the same host checks that process (the start time tells a reused pid apart, the
namespace a container's pid from the host's: see :class:`mltrack.authoring.WriterRecord`).
A run written on another host cannot be judged from here.
"""

from __future__ import annotations

from collections.abc import Mapping

from mltrack.authoring import WriterRecord
from mltrack_mlflow import mapping as m

__all__ = ["WRITER", "writer_gone"]


WRITER = WriterRecord.current().to_text()
"""This process as a run's writer: the value of the ``mltrack.writer`` tag."""


def writer_gone(tags: Mapping[str, str]) -> bool:
    """True if the run's writer process was on this host and is gone (elsewhere: cannot tell)."""
    record = WriterRecord.from_text(tags.get(m.WRITER_TAG, ""))
    return record is not None and record.is_gone()
