"""mltrack-aim: the Aim backend of mltrack (local repositories and ``aim://`` servers).

``import mltrack_aim`` does not import aim; the backend does, when it is selected.
"""

from __future__ import annotations

from mltrack_aim.processes import AimProcess, start_aim_server, start_aim_ui
from mltrack_aim.settings import AimSettings, configure_aim_backend

__version__ = "0.1.0"

__all__ = [
    "AimProcess",
    "AimSettings",
    "configure_aim_backend",
    "start_aim_server",
    "start_aim_ui",
]
