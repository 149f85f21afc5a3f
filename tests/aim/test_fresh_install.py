"""``pip install mltrack-aim`` alone, with whatever pip resolves today, runs against an ``aim server``.

Aim pins none of its web stack (fastapi, starlette, uvicorn, websockets, requests), so a new
release of one of them can break ``aim server`` for a user who never sees our lock files.
This test installs mltrack-core and mltrack-aim into a new virtual environment with no
constraints, starts a real ``aim server`` from it, and writes, lists, deletes and reads runs
through it in a process that must end on its own. It needs the package index and a few
minutes, so it runs in ``nox -s latest`` (and ``nox -s slow``), not in ``nox -s tests``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent(
    """
    import sys
    import mltrack
    from mltrack.errors import RunNotFoundError
    from mltrack_aim import start_aim_server

    with start_aim_server(sys.argv[1]) as server:
        mltrack.configure_backend("aim", repo_path=server.address, artifacts_dir=sys.argv[2])
        ids = []
        for lr in (1e-3, 3e-4):
            with mltrack.start_run("fresh-install", {"learning_rate": lr}) as run:
                for step in range(200):
                    run.log_metric("loss", 1.0 / (step + 1), step=step)
            ids.append(run.id)
        repo = mltrack.factory.experiment_repository()
        listed = {s.experiment_id: s for s in repo.list_experiments_sync()}
        assert set(ids) <= set(listed), listed
        assert all(listed[i].status.value == "completed" for i in ids)
        assert len(repo.get_experiment_metrics_sync(ids[0]).series("loss").steps) == 200
        repo.delete_experiment_sync(ids[1])
        assert ids[1] not in {s.experiment_id for s in repo.list_experiments_sync()}
        try:
            repo.get_experiment_sync(ids[1])
            raise AssertionError("a deleted run was still found")
        except RunNotFoundError:
            pass
        mltrack.factory.reset()
    print("fresh install OK")
    """
)


@pytest.mark.slow
def test_aim_server_works_with_what_pip_resolves_for_mltrack_aim_alone(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--quiet",
            "-e",
            str(ROOT / "packages" / "mltrack-core"),
            "-e",
            str(ROOT / "packages" / "mltrack-aim"),
        ],
        check=True,
        timeout=900,
    )
    versions = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout
    print("resolved:", " ".join(v for v in versions.split() if v.split("==")[0].lower() in _WEB_STACK))
    script = tmp_path / "fresh.py"
    script.write_text(_SCRIPT)
    done = subprocess.run(
        [python, str(script), str(tmp_path / "repo"), str(tmp_path / "artifacts")],
        capture_output=True,
        text=True,
        timeout=600,  # the process must end on its own: a hang at exit fails here
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "fresh install OK" in done.stdout


_WEB_STACK = {"aim", "fastapi", "starlette", "uvicorn", "websockets", "requests", "aimrocks", "sqlalchemy"}
