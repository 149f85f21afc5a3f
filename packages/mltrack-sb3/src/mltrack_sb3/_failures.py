"""What happens when tracking fails during training: a warning once, a count, an unhealthy health check.

Training is worth more than its log: a store that hiccups, a run that cannot be created or a
value mltrack rejects must never stop ``model.learn()``. The user still has to find out, so
each failure is counted here, warned about once per callback (or output format), and
reported by :func:`failure_health` and by ``mltrack.health_check()``.
"""

from __future__ import annotations

import threading
import warnings

from mltrack.config import current_config
from mltrack.models import HealthStatus

__all__ = ["FailureReporter", "TrackingFailureWarning", "failure_health", "reset_failures"]

_lock = threading.Lock()
_count = 0
_last: str | None = None


class TrackingFailureWarning(UserWarning):
    """Tracking failed during training; training went on without it."""


class FailureReporter:
    """Counts one component's tracking failures and warns about the first one."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.failures = 0
        self.last_error: str | None = None

    def report(self, action: str, exc: BaseException) -> None:
        """Record that ``action`` failed with ``exc``; re-raises only in strict mode (tests)."""
        if current_config().strict:
            raise exc
        message = f"{self.component}: {action} failed: {type(exc).__name__}: {exc}"
        self.failures += 1
        self.last_error = message
        _record(message)
        if self.failures == 1:
            warnings.warn(
                f"mltrack: {message}. Training continues; later tracking failures of this "
                "run are counted silently (see mltrack.health_check() or `mltrack health`).",
                TrackingFailureWarning,
                stacklevel=3,
            )


def _record(message: str) -> None:
    global _count, _last
    with _lock:
        _count += 1
        _last = message


def failure_health() -> HealthStatus:
    """Whether the SB3 integration has failed to track anything in this process."""
    with _lock:
        count, last = _count, _last
    if not count:
        return HealthStatus(True, (), backend="sb3", details={"tracking_failures": 0})
    return HealthStatus(
        False,
        (f"{count} tracking failure(s) during SB3 training; last: {last}",),
        backend="sb3",
        details={"tracking_failures": count, "last_error": last},
    )


def reset_failures() -> None:
    """Forget the failures counted so far (tests)."""
    global _count, _last
    with _lock:
        _count, _last = 0, None
