"""Start and stop TensorBoard's own server (``tensorboard --logdir ... --host 127.0.0.1``).

It runs in its own process group (see :mod:`mltrack.servers`), so stopping it also ends the
data server (``rustboard``) TensorBoard starts beside itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mltrack.servers import ServerProcess, free_port, start_server

__all__ = ["TensorboardProcess", "start_tensorboard"]


class TensorboardProcess(ServerProcess):
    """A running ``tensorboard`` server over one log folder."""


def start_tensorboard(
    logdir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 90.0,
    reload_interval: float | None = None,
) -> TensorboardProcess:
    """Start ``tensorboard --logdir logdir`` on ``host``:``port`` (a free port by default); returns once it answers.

    ``reload_interval`` (seconds between rescans of the folder) is TensorBoard's own default
    when None. Call ``stop()`` to end it and its data server.
    """
    folder = Path(logdir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    argv = [
        # This interpreter's tensorboard, not whichever `tensorboard` is first on PATH.
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(folder),
        "--host",
        host,
        "--port",
        str(port),
    ]
    if reload_interval is not None:
        argv += ["--reload_interval", str(reload_interval)]
    return start_server(
        argv,
        name="`tensorboard`",
        url=f"http://{host}:{port}",
        probe="/data/environment",
        timeout=timeout,
        wrap=TensorboardProcess,
    )
