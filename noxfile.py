"""Every workflow of the project: ``nox -s tests``, ``lint``, ``typecheck``, ``demo``, ``bench``."""

from __future__ import annotations

from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ROOT / "packages"
# torch must come from the CPU wheel on this machine's disk; any other version pulls a CUDA build.
TORCH = "torch==2.13.0"
TEST_TOOLS = [
    "pytest>=8",
    "hypothesis>=6.100",
    "pytest-timeout>=2.3",
    "numpy",
    "matplotlib",
    "pillow",
    "pyarrow",
    "pandas",
    "psutil",
]

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


def _packages() -> list[str]:
    """Distribution folders, core first (the others depend on it)."""
    found = sorted(p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").exists())
    found.sort(key=lambda name: name != "mltrack-core")
    return found


def _install_project(session: nox.Session, *extra: str) -> None:
    if "mltrack-sb3" in _packages():
        session.install(TORCH)
    args: list[str] = []
    for name in _packages():
        args += ["-e", str(PACKAGES / name)]
    session.install(*args, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """The CI suite: unit, conformance, integration (real Aim, real SB3) and short reliability tests."""
    _install_project(session, *TEST_TOOLS)
    session.run("pytest", "-m", "not slow", "--timeout=600", *session.posargs)


@nox.session
def reliability(session: nox.Session) -> None:
    """The full reliability suite (long: repeated crashes, concurrency, faults)."""
    _install_project(session, *TEST_TOOLS)
    session.run(
        "pytest",
        "tests/reliability",
        "-m",
        "slow or not slow",
        "--timeout=3600",
        *session.posargs,
        env={"MLTRACK_RELIABILITY_RANDOM": "1"},
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy (strict) over every distribution's sources."""
    _install_project(session, "mypy>=1.10", "pytest>=8")
    sources = [str(PACKAGES / name / "src") for name in _packages()]
    session.run("mypy", *sources)


@nox.session
def demo(session: nox.Session) -> None:
    """Run the main job end to end and print what was recorded."""
    _install_project(session)
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against raw stores and peers (MLflow, TensorBoard), written to benchmarks/RESULTS.md."""
    _install_project(session, "numpy", "psutil", "mlflow>=2.8", "tensorboard", "tensorboardX", TORCH)
    session.run("python", "benchmarks/run.py", *session.posargs)
