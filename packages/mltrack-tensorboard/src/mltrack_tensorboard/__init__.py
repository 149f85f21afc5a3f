"""mltrack-tensorboard: the TensorBoard backend of mltrack (event files, read and written).

``import mltrack_tensorboard`` does not import tensorboard; the backend does,
when it is selected.
"""

from __future__ import annotations

from mltrack_tensorboard.processes import TensorboardProcess, start_tensorboard
from mltrack_tensorboard.settings import TensorboardSettings, configure_tensorboard_backend

__version__ = "0.1.0"

__all__ = [
    "TensorboardProcess",
    "TensorboardSettings",
    "configure_tensorboard_backend",
    "start_tensorboard",
]
