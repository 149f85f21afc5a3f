"""A server started through mltrack.servers never outlives the process that started it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from mltrack.errors import BackendError
from mltrack.servers import ServerProcess, start_server

_STARTER = textwrap.dedent(
    """
    import sys
    from mltrack.servers import ServerProcess, free_port, start_server
    port = free_port()
    # A server with a child of its own, as `aim up` (uvicorn master and workers) has.
    code = (
        "import http.server, subprocess, sys;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        f"http.server.HTTPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler).serve_forever()"
    )
    server = start_server([sys.executable, "-c", code], name="test server",
                          url=f"http://127.0.0.1:{port}", probe="/", wrap=ServerProcess)
    print(server.pid, port, flush=True)
    sys.stdin.read()  # until killed
    """
)


def _listening(port: int) -> bool:
    # Not a bind test: the probe's closed connection keeps the port in TIME_WAIT for a while.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_server_dies_with_its_starter_when_the_starter_is_killed() -> None:
    starter = subprocess.Popen(
        [sys.executable, "-c", _STARTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert starter.stdout is not None
    pgid, port = (int(x) for x in starter.stdout.readline().split())
    try:
        assert _group_alive(pgid) and _listening(port)
        starter.send_signal(signal.SIGKILL)  # no stop(), no atexit: a cut-off test run
        starter.wait(10)
        deadline = time.monotonic() + 15
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(pgid), "the server's process group outlived its starter"
        assert not _listening(port)
    finally:
        if _group_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)


def test_a_port_another_process_listens_on_is_refused_not_probed() -> None:
    """Else the probe is answered by the other process and clients talk to the wrong server
    (a port handed out again while a test's server was down for a restart)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(BackendError, match=f"another process already listens on 127.0.0.1:{port}"):
            start_server(
                [sys.executable, "-c", "import time; time.sleep(60)"],
                name="test server",
                url=f"http://127.0.0.1:{port}",
                probe="/",
                wrap=ServerProcess,
                timeout=5,
            )
