"""The mltrack plugin of mltrack-sb3, found through the ``mltrack`` entry-point group.

It provides no backend: it makes the integration show in ``mltrack backends`` and answers
``mltrack_health`` with the tracking failures of SB3 training in this process. It imports
neither Stable-Baselines3 nor any store, so loading mltrack's plugins stays cheap.
"""

from __future__ import annotations

from mltrack.hookspecs import hookimpl
from mltrack.models import HealthStatus
from mltrack_sb3._failures import failure_health


@hookimpl
def mltrack_health() -> HealthStatus:
    """Report tracking failures of ``TrackingCallback`` and ``MLTrackOutputFormat``."""
    return failure_health()
