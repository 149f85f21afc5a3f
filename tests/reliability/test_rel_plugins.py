"""Case 7, plugins: one that raises at import, one that raises in a hook, one that hangs in a hook.

The three are real distributions (a dist-info with an ``mltrack`` entry point on PYTHONPATH)
installed beside the real Aim backend. The trainer runs in its own interpreter, so the
plugins load as a user would get them, in the trainer and in Aim's writer process.
Complements tests/core/test_plugins.py (broken at import, throwaway backend) and
tests/core/test_api.py (hanging/raising observers registered in-process on the memory store).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from _reliability import child_env, read_run, record, repetitions

CI_RUNS = repetitions("MLTRACK_RELIABILITY_PLUGIN_RUNS", 1)
FULL_RUNS = 5
HOOK_TIMEOUT = 1.0

PLUGINS = {
    "rel_broken_import": 'raise RuntimeError("rel_broken_import is broken on purpose")\n',
    "rel_raising_hook": textwrap.dedent(
        """
        from mltrack import hookimpl

        @hookimpl
        def mltrack_log_metrics(run_id, batch):
            raise RuntimeError("rel_raising_hook fails on purpose")
        """
    ),
    "rel_hanging_hook": textwrap.dedent(
        """
        import time
        from mltrack import hookimpl

        @hookimpl
        def mltrack_log_metrics(run_id, batch):
            time.sleep(3600)
        """
    ),
}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding three faulty plugin distributions, as pip would install them."""
    site = tmp_path_factory.mktemp("faulty-plugins")
    for module, source in PLUGINS.items():
        (site / f"{module}.py").write_text(source)
        dist = site / f"{module}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n"
        )
        (dist / "entry_points.txt").write_text(f"[mltrack]\n{module} = {module}\n")
    return site


def _env(site: Path, repo: Path) -> dict[str, str]:
    return child_env(
        {
            "PYTHONPATH": str(site),
            "ML_TRACKING_BACKEND": "aim",
            "ML_STORAGE_PATH": str(repo),
            "MLTRACK_HOOK_TIMEOUT": str(HOOK_TIMEOUT),
        }
    )


def _train(site: Path, repo: Path, runs: int) -> dict[str, object]:
    code = f"""
        import json, time, mltrack
        ids = []
        started = time.monotonic()
        for r in range({runs}):
            with mltrack.start_run("plugins") as run:
                for step in range(2000):
                    run.log_metric("loss", 1.0 / (step + 1), step=step)
            ids.append(run.id)
        took = time.monotonic() - started
        health = mltrack.factory.health_sync()
        print(json.dumps(dict(ids=ids, took=took, healthy=health.is_healthy, issues=list(health.issues),
                              writer=health.details["writer"],
                              load_errors=sorted(health.details.get("plugin_load_errors", {{}})))))
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(site, repo),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["stderr"] = proc.stderr
    return out


def _check(site: Path, repo: Path, runs: int) -> None:
    started = time.monotonic()
    out = _train(site, repo, runs)
    stored = [len(read_run(str(repo), run_id)["steps"]) for run_id in out["ids"]]  # type: ignore[union-attr]
    record(
        "plugins",
        runs=runs,
        points_logged=2000 * runs,
        points_read=sum(stored),
        points_lost=2000 * runs - sum(stored),
        train_s=round(float(out["took"]), 2),  # type: ignore[arg-type]
        wall_s=round(time.monotonic() - started, 2),
        load_errors=out["load_errors"],
        undelivered=out["writer"]["points_undelivered"],  # type: ignore[index]
    )
    assert stored == [2000] * runs  # the Aim backend got every point
    assert out["writer"]["points_undelivered"] == 0  # type: ignore[index]  # observers' failures lose nothing
    stderr = str(out["stderr"])
    assert "rel_broken_import" in stderr and "broken on purpose" in stderr  # the import warning names it
    assert out["load_errors"] == ["rel_broken_import"]
    issues = " ".join(out["issues"])  # type: ignore[arg-type]
    assert "rel_raising_hook" in issues or "rel_hanging_hook" in issues
    assert not out["healthy"]
    # The hung plugin is cut off once, after HOOK_TIMEOUT; it never holds up training again.
    assert float(out["took"]) < 30 * runs  # type: ignore[arg-type]


def test_faulty_plugins_are_isolated_and_named(plugin_site: Path, aim_repo: Path) -> None:
    """Broken at import, raising and hanging plugins: Aim gets every point, health names them."""
    _check(plugin_site, aim_repo, CI_RUNS)


@pytest.mark.slow
def test_faulty_plugins_over_5_runs(plugin_site: Path, aim_repo: Path) -> None:
    """The same over five runs in one session."""
    _check(plugin_site, aim_repo, FULL_RUNS)


def test_mltrack_backends_lists_the_broken_plugin_with_its_error(plugin_site: Path, aim_repo: Path) -> None:
    """``mltrack backends`` names the plugin that failed to import, its error, and still lists aim."""
    proc = subprocess.run(
        [sys.executable, "-m", "mltrack", "backends", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(plugin_site, aim_repo),
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert "broken on purpose" in data["load_errors"]["rel_broken_import"]
    names = {p["name"] for p in data["plugins"]}
    assert {"rel_raising_hook", "rel_hanging_hook", "aim"} <= names
