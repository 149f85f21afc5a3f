"""The ``memory`` backend under its former import path; it lives in :mod:`mltrack.memory`."""

from mltrack.memory import MemoryBackend, clear

__all__ = ["MemoryBackend", "clear"]
