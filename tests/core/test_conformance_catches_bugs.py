"""The conformance suite catches real bugs: every planted bug of ``_mutants`` fails at least one test.

Each mutant (the memory backend with one bug) runs the whole suite in a pytest of its own
(``_mutant_conformance.py``, no conftest), all of them in parallel; the unmutated memory
backend, the control, must pass it entirely. About 20-40 s in all.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest
from _mutants import MUTANTS

from _child import env_without

HERE = Path(__file__).parent
SUITE = HERE / "_mutant_conformance.py"
CONTROL = "memory"


@attrs.frozen
class SuiteRun:
    """One backend's run of the conformance suite: exit status, the tests that failed, the output."""

    backend: str
    returncode: int
    failed: tuple[str, ...]
    output: str

    @property
    def summary(self) -> str:
        """The last line pytest printed (``2 failed, 31 passed, 3 skipped in 1.5s``)."""
        lines = [line for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"


def _run_suite(backend: str, basetemp: Path) -> SuiteRun:
    env = env_without(("ML_", "MLTRACK_"))
    env["MLTRACK_MUTANT"] = backend
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rf",
            "-p",
            "no:cacheprovider",
            "--noconftest",  # the suite's conftest resets the plugin host between tests
            f"--basetemp={basetemp / backend}",
            str(SUITE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=HERE.parent.parent,
    )
    output = proc.stdout + proc.stderr
    failed = tuple(sorted(set(re.findall(r"^FAILED \S+::(test_\w+(?:\[[^\]]*\])?)", output, re.M))))
    return SuiteRun(backend, proc.returncode, failed, output)


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SuiteRun]:
    """The conformance suite's run on the control and on every mutant, by backend name."""
    basetemp = tmp_path_factory.mktemp("mutants")
    backends = [CONTROL, *(f"mutant-{name}" for name in MUTANTS)]
    # Each run is mostly interpreter start-up and imports: more workers than cores still pays.
    with ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 1) * 2)) as pool:
        runs = list(pool.map(lambda b: _run_suite(b, basetemp), backends))
    return {run.backend: run for run in runs}


def test_unmutated_memory_backend_passes_the_whole_suite(suite_runs: dict[str, SuiteRun]) -> None:
    control = suite_runs[CONTROL]
    assert control.returncode == 0, f"the control run failed:\n{control.output[-5000:]}"
    assert " passed" in control.summary and "failed" not in control.summary, control.summary


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_planted_bug_fails_the_suite(suite_runs: dict[str, SuiteRun], mutant: str) -> None:
    run = suite_runs[f"mutant-{mutant}"]
    bug = (MUTANTS[mutant].__doc__ or "").strip()
    assert run.returncode == 1 and run.failed, (
        f"mutant {mutant!r} ({bug}) passed the conformance suite: no test catches it "
        f"(exit {run.returncode}, {run.summary})\n{run.output[-3000:]}"
    )
    # Caught by an assertion of a test, not by the suite breaking on its own.
    assert "error" not in run.summary, (
        f"mutant {mutant!r}: the suite errored: {run.summary}\n{run.output[-3000:]}"
    )
    print(f"mutant {mutant}: killed by {', '.join(run.failed)}")
