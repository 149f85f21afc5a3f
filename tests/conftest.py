"""Shared fixtures: every test starts from a clean mltrack configuration."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# `import mlflow` reports to MLflow's telemetry service unless told not to; test modules may
# import it at collection, before any fixture runs.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Spools of trainers the tests kill stay in the test run's own folder, never in the user's
# ~/.cache (where later mltrack processes would try to deliver them); child processes keep it.
SPOOL_ROOT = Path(tempfile.mkdtemp(prefix="mltrack-test-spools-"))
os.environ["MLTRACK_SPOOL_DIR"] = str(SPOOL_ROOT / "session")
# Fixtures wider than a test (module, session) record runs before the per-test clean-up below:
# no system metrics sampled into them (a slow machine would add `system/*` series some times).
os.environ["MLTRACK_SYSTEM_METRICS"] = "0"


# Scopes that take a minute or more (a cluster, the mutant suite runs, server restarts, 32 writers
# into one aim server): handed out first under pytest-xdist, so none starts last and runs alone.
_LONG_SCOPES = (
    "tests/cluster",
    "tests/core/test_conformance_catches_bugs.py",
    "tests/reliability/test_rel_concurrency.py",
    "tests/reliability/test_rel_server_faults.py",
    "tests/aim/test_conformance.py::TestAimServer",
    "tests/mlflow/test_mlflow_conformance.py::TestMlflowSqlite",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` (``nox -s tests``), tests/cluster one scope, the long scopes handed out first.

    loadscope keeps a module (a test class) on one worker, so module fixtures (an ``aim server``,
    a trained model, the mutant suite runs) start once, and the suite starts one cluster.
    (pytest-xdist's xdist_group marks are lost under pytest 9, which no longer takes a changed node id.)
    """
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _Scopes(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/cluster/"):
                return "tests/cluster"
            return str(super()._split_scope(nodeid))

        def _assign_work_unit(self, node: Any) -> None:
            if not getattr(self, "_long_first", False):  # the first hand-out: reorder the queue once
                self._long_first = True

                def rank(item: tuple[str, dict[str, bool]]) -> tuple[int, int]:
                    scope, tests = item
                    long = _LONG_SCOPES.index(scope) if scope in _LONG_SCOPES else len(_LONG_SCOPES)
                    return long, -len(tests)  # then the scopes with most tests, as loadscope does

                ordered = sorted(self.workqueue.items(), key=rank)
                self.workqueue.clear()
                self.workqueue.update(ordered)
            super()._assign_work_unit(node)

    return _Scopes(config, log)


@pytest.fixture(scope="session", autouse=True)
def _no_process_left_behind() -> Iterator[None]:
    """End the suite with no server or writer process of its own still running.

    Fixtures stop what they start by PID; this catches what a failing test or a timeout
    left (a writer draining into a dead server, a server whose fixture never ran its
    teardown), ends it, and names it, so a run never leaves ports and repositories held.
    """
    import psutil

    yield
    me = psutil.Process()
    left = [p for p in me.children(recursive=True) if p.is_running()]
    if not left:
        return
    described = []
    for proc in left:
        try:
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:160]}")
            proc.terminate()
        except psutil.Error:
            continue
    _gone, alive = psutil.wait_procs(left, timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    print("\nprocesses left running by the tests, now stopped:\n  " + "\n  ".join(described))


@pytest.fixture(scope="session", autouse=True)
def _test_spools_removed() -> Iterator[None]:
    """The suite's spool folders go with it."""
    yield
    shutil.rmtree(SPOOL_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_mltrack_state(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from mltrack.settings import SETTINGS

    # Every variable mltrack reads (its one settings table), and MLflow's own run selectors.
    mlflow_own = ("MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID")
    for var in (*(setting.name for setting in SETTINGS), *mlflow_own):
        monkeypatch.delenv(var, raising=False)
    # Each test its own spool folder (a test that kills a trainer leaves its spool there).
    monkeypatch.setenv("MLTRACK_SPOOL_DIR", tempfile.mkdtemp(prefix="t-", dir=SPOOL_ROOT))
    # No system metrics in runs that count their series (a loaded machine reached the 10 s
    # interval some times); tests/system/conftest.py turns them back on there.
    monkeypatch.setenv("MLTRACK_SYSTEM_METRICS", "0")
    yield
    from mltrack import config, factory, plugins

    factory.reset()
    config._configured = None
    plugins.reset_plugin_host()


@pytest.fixture(scope="session")
def repo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Aim repository, created once (creation costs a few seconds)."""
    from mltrack_aim.store import ensure_repo

    root = tmp_path_factory.mktemp("aim-template")
    ensure_repo(str(root))
    return root


@pytest.fixture
def aim_repo(tmp_path: Path, repo_template: Path) -> Path:
    """A fresh, empty Aim repository folder (holding ``.aim``) of this test's own."""
    root = tmp_path / "aim_logs"
    shutil.copytree(repo_template, root)
    return root


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database, created once (MLflow's migrations take seconds)."""
    from mltrack_mlflow.backend import sqlalchemy_store_class
    from mltrack_mlflow.settings import DB_NAME, sqlite_uri

    root = tmp_path_factory.mktemp("mlflow-template")
    sqlalchemy_store_class()(sqlite_uri(root), (root / "artifacts").as_uri()).engine.dispose()
    return root / DB_NAME


@pytest.fixture
def mlflow_dir(tmp_path: Path, mlflow_db_template: Path) -> Path:
    """A folder of this test's own holding an empty ``mlflow.db`` (a copy of the template)."""
    root = tmp_path / "mlflow_logs"
    root.mkdir()
    shutil.copyfile(mlflow_db_template, root / mlflow_db_template.name)
    return root
