"""Run a server so that it never outlives the process that started it.

``python -m mltrack._guard -- ARGV...`` leads a new process group, starts ``ARGV`` in it and
waits. When the starter goes away without stopping the server (killed, cut off by a test
timeout, a crashed CLI), the guard ends the whole group: a UI or tracking server left
running would hold its port and repository for ever. It exits with the server's code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

_POLL_S = 0.2
_GRACE_S = 5.0


def _end_group(child: subprocess.Popen[bytes]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the guard outlives the TERM it sends
    os.killpg(0, signal.SIGTERM)
    try:
        child.wait(timeout=_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)  # workers that ignored TERM, and this guard last


def main(argv: list[str]) -> int:
    """Start ``argv`` in this process's group; end the group if our parent dies."""
    starter = os.getppid()
    child = subprocess.Popen(argv)
    while True:
        try:
            code = child.wait(timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            if os.getppid() != starter:
                _end_group(child)
                return 1
            continue
        return code


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    raise SystemExit(main(args))
