"""Child interpreters for tests: a fresh process (fresh caches, a real crash, a fresh reader)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

SUITE_SETTINGS = ("MLTRACK_SPOOL_DIR", "MLTRACK_SYSTEM_METRICS")
"""What tests/conftest.py sets for every process of the suite: kept when other settings are stripped."""


def env_without(prefixes: tuple[str, ...]) -> dict[str, str]:
    """This process's environment without the variables starting with ``prefixes`` (the suite's own kept)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) or k in SUITE_SETTINGS}


def child_env(extra: dict[str, str] | None = None, *, clean: bool = False) -> dict[str, str]:
    """This process's environment (``clean``: without mltrack's own settings), plus ``extra``."""
    env = env_without(("ML_", "MLTRACK_", "AIM_REPO")) if clean else dict(os.environ)
    env.update(extra or {})
    return env


def run_python(
    code: str, *, timeout: float = 300, env: dict[str, str] | None = None, clean: bool = False
) -> Any:
    """Run ``code`` in a new interpreter; return what it printed last, parsed as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(env, clean=clean),
    )
    if proc.returncode != 0:
        raise AssertionError(
            f"child failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return json.loads(lines[-1])


def popen_python(
    code: str, *, env: dict[str, str] | None = None, clean: bool = False, stdin: bool = False
) -> subprocess.Popen[str]:
    """Start ``code`` in a new interpreter, stdout and stderr (and stdin if asked) piped as line-buffered text."""
    return subprocess.Popen(
        [sys.executable, "-u", "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=child_env(env, clean=clean),
    )


def logging_trainer(setup: str, *, value: str, pause_every: int, pause: float) -> str:
    """A trainer for :func:`kill_while_logging`: logs ``loss`` (``value``, an expression of ``step``) forever.

    ``setup`` configures mltrack (it may be empty: the environment then does) and ends with a
    ``run = ...`` line; the trainer prints ``run <id>``, then ``<step> <time the call returned>``
    per point, and sleeps ``pause`` seconds every ``pause_every`` points.
    """
    return (
        "import time, mltrack\n"
        + textwrap.dedent(setup).strip()
        + f"""
print("run", run.id, flush=True)
step = 0
while True:
    run.log_metric("loss", {value}, step=step)
    print(step, time.time(), flush=True)
    step += 1
    if step % {pause_every} == 0:
        time.sleep({pause})
"""
    )


def kill_while_logging(
    child: subprocess.Popen[str], *, seconds: float, min_lines: int = 0
) -> tuple[str, list[tuple[int, float]], float]:
    """SIGKILL a trainer after ``seconds`` (and ``min_lines`` logged points); what did it log?

    The trainer prints ``run <id>`` first, then ``<step> <time the log call returned>`` per
    point. Returns the run id, every (step, returned-at) it printed, and when it was killed.
    """
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline().split()
    assert first[:1] == ["run"], [*first, child.stderr.read()]
    logged: list[tuple[int, float]] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds or len(logged) < min_lines:
        line = child.stdout.readline()
        assert line, child.stderr.read() or "the trainer ended before it was killed"
        step, at = line.split()
        logged.append((int(step), float(at)))
    os.kill(child.pid, signal.SIGKILL)
    killed_at = time.time()
    child.wait(10)
    for line in child.stdout:  # lines printed before the kill landed (the last may be cut short)
        fields = line.split()
        if len(fields) == 2 and line.endswith("\n"):
            logged.append((int(fields[0]), float(fields[1])))
    return first[1], logged, killed_at


def assert_kept_before_window(
    logged: list[tuple[int, float]], killed_at: float, window: float, stored_steps: list[int]
) -> None:
    """Every point whose log call returned more than ``window`` s before the kill was stored, in order."""
    stored = set(stored_steps)
    must_have = [step for step, at in logged if at < killed_at - window]
    assert must_have, "the child logged nothing before the loss window"
    missing = [s for s in must_have if s not in stored]
    assert not missing, f"{len(missing)} points logged before the loss window are lost: {missing[:10]}"
    # a prefix of the steps: nothing out of order survived alone
    assert stored_steps == list(range(len(stored_steps)))


def writer_pid(trainer_pid: int, not_pid: int | None = None) -> int | None:
    """The trainer's mltrack writer process (other than ``not_pid``, one already killed), if it runs."""
    import psutil

    try:
        children = psutil.Process(trainer_pid).children()
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if "mltrack._writer_process" in " ".join(child.cmdline()) and child.pid != not_pid:
                if child.status() != psutil.STATUS_ZOMBIE:
                    return child.pid
        except psutil.NoSuchProcess:
            continue
    return None


def wait_for_writer(trainer_pid: int, not_pid: int | None = None, timeout: float = 30) -> int:
    """The PID of the trainer's writer process (other than ``not_pid``) once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = writer_pid(trainer_pid, not_pid)
        if pid:
            return pid
        time.sleep(0.02)
    raise AssertionError(f"no writer process of trainer {trainer_pid} started within {timeout} s")
