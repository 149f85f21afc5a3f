"""Reading the machine once: CPU, memory, disk and network counters (psutil), GPUs through NVML.

Names follow MLflow's system metrics (``system/cpu_utilization_percentage``, ...), so MLflow's
UI groups them as system metrics; the others are named in the same style. Counters (disk and
network bytes) are cumulative here; the sampler turns them into bytes since each run started.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["COUNTERS", "PREFIX", "Probe"]

PREFIX = "system/"
"""Every system metric's name starts with this (MLflow's prefix for its system metrics)."""
MB = 1e6
"""Megabytes as MLflow counts them (10^6 bytes)."""
COUNTERS = (
    "disk_read_megabytes",
    "disk_write_megabytes",
    "network_receive_megabytes",
    "network_transmit_megabytes",
)
"""Metrics that count megabytes since the run started (the others are levels at sampling time)."""

log = logging.getLogger(__name__)


def _open_gpus() -> tuple[list[Any], str]:
    """NVML's device handles and a note on why there are none (``""`` when some answered)."""
    try:
        import pynvml  # nvidia-ml-py: `pip install 'mltrack-system[gpu]'`
    except ImportError:
        return [], "nvidia-ml-py not installed (pip install 'mltrack-system[gpu]')"
    try:
        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())], ""
    except Exception as exc:  # NVMLError: no driver, no GPU, not permitted
        return [], f"no GPU answered NVML: {exc}"


class Probe:
    """The process and the machine, read in one call; built once per sampler thread."""

    def __init__(self, disk_path: str = "/") -> None:
        import psutil

        self._psutil = psutil
        self._process = psutil.Process()
        self._cpus = psutil.cpu_count() or 1
        self._disk_path = disk_path
        self._process.cpu_percent(None)  # measures since the previous call: this one starts the clock
        self.gpus, self.gpu_note = _open_gpus()

    def start_clock(self) -> None:
        """Start the machine's CPU clock in the calling thread (psutil measures per thread)."""
        self._psutil.cpu_percent(None)

    def counters(self) -> dict[str, float]:
        """Cumulative disk and network megabytes (a counter the OS does not expose is left out)."""
        out: dict[str, float] = {}
        disk = self._psutil.disk_io_counters()
        if disk is not None:  # None in some containers
            out["disk_read_megabytes"] = disk.read_bytes / MB
            out["disk_write_megabytes"] = disk.write_bytes / MB
        net = self._psutil.net_io_counters()
        if net is not None:
            out["network_receive_megabytes"] = net.bytes_recv / MB
            out["network_transmit_megabytes"] = net.bytes_sent / MB
        return out

    def levels(self) -> dict[str, float]:
        """CPU, memory, disk usage and GPUs now (CPU: the average since the previous call)."""
        ps, proc = self._psutil, self._process
        memory = ps.virtual_memory()
        with proc.oneshot():
            process_cpu = proc.cpu_percent(None) / self._cpus
            rss = proc.memory_info().rss
            process_memory = proc.memory_percent()
        out = {
            "cpu_utilization_percentage": ps.cpu_percent(None),
            "process_cpu_utilization_percentage": process_cpu,
            "system_memory_usage_megabytes": memory.used / MB,
            "system_memory_usage_percentage": memory.percent,
            "process_memory_rss_megabytes": rss / MB,
            "process_memory_usage_percentage": process_memory,
        }
        try:
            disk = ps.disk_usage(self._disk_path)
            out["disk_usage_percentage"] = disk.percent
            out["disk_usage_megabytes"] = disk.used / MB
            out["disk_available_megabytes"] = disk.free / MB
        except OSError:
            pass
        for i, handle in enumerate(self.gpus):
            out.update(_gpu_levels(i, handle))
        return out


def _gpu_levels(i: int, handle: Any) -> dict[str, float]:
    """One GPU's utilisation, memory, temperature and power, each left out if NVML refuses it."""
    import pynvml

    out: dict[str, float] = {}
    name = f"gpu_{i}_"
    try:
        out[name + "utilization_percentage"] = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:
        pass
    try:
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        out[name + "memory_usage_percentage"] = memory.used * 100 / memory.total
        out[name + "memory_usage_megabytes"] = memory.used / MB
    except Exception:
        pass
    try:
        out[name + "temperature_celsius"] = float(
            pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
        )
    except Exception:
        pass
    try:
        watts = pynvml.nvmlDeviceGetPowerUsage(handle) / 1000
        out[name + "power_usage_watts"] = watts
        out[name + "power_usage_percentage"] = (
            watts * 100_000 / pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)
        )
    except Exception:
        pass
    return out
