"""mltrack-system: system metrics (CPU, memory, disk and network I/O, GPUs) sampled into every run.

Installed, it samples each run of the process every ``MLTRACK_SYSTEM_INTERVAL`` seconds (10 by
default) on one daemon thread, under names starting with ``system/``; ``MLTRACK_SYSTEM_METRICS=0``
turns it off. GPUs are sampled through NVML when ``nvidia-ml-py`` is installed and a GPU answers.
"""

from __future__ import annotations

from mltrack_system.probe import PREFIX
from mltrack_system.sampler import THREAD_NAME

__all__ = ["PREFIX", "THREAD_NAME"]
