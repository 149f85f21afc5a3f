"""Runs logged through mltrack, read back in fresh processes by W&B's own reader and by mltrack.

W&B's reader is ``wandb leet inspect`` (wandb-core's, no server): config, history and summary
must be what mltrack reads back. The other way round, an offline run W&B's own SDK wrote reads
back in mltrack as W&B shows it, and ``mltrack copy`` moves it to another store.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _wandb_native import last_per_step, leet_history, leet_records, leet_summary, same, sync_dry_run

from mltrack_wandb.backend import mltrack_id

from _child import run_python

CONFIG = {
    "agent_type": "PPO",
    "learning_rate": 0.0003,
    "layers": [64, 64],
    "opt": {"beta": 0.9, "eps": 1e-08, "schedule": {"kind": "linear"}},
    "use_gae": True,
    "seed": None,
}


def _log(root: Path) -> Any:
    """Log two runs through mltrack's public API in a child process (writer process); return their ids."""
    return run_python(
        f"""
        import json, math, mltrack
        from mltrack import ExperimentStatus
        with mltrack.start_run("native-readback", {CONFIG!r}, name="ppo-a", tags=["baseline", "ppo v2"],
                               description="first try") as run:
            for step in range(0, 50, 10):
                run.log_metrics({{"loss": 1.0 / (step + 1), "reward": step * 2.0}}, step=step)
            run.log_metric("loss", 123.0, step=40)  # a later write of step 40 replaces the first
            run.log_metric("loss", 0.5, step=0, context={{"subset": "val"}})
            run.log_metric("odd", math.nan, step=0)
            run.log_metric("odd", math.inf, step=1)
            run.log_params({{"batch_size": 2048}})
            run.set_tags(["late"])
            source = {str(root.parent / "policy.zip")!r}
            with open(source, "wb") as out:
                out.write(b"policy weights" * 100)
            run.log_artifact(source, "model", name="models/policy.zip", metadata={{"score": 0.9}})
            run.finish(final_metrics={{"win_rate": 0.68}})
        other = mltrack.start_run("native-readback", name="ppo-b")
        other.log_metric("loss", 9.0, step=1)
        other.finish(ExperimentStatus.INTERRUPTED)
        print(json.dumps({{"done": run.id, "interrupted": other.id}}))
        """,
        env={"ML_TRACKING_BACKEND": "wandb", "ML_STORAGE_PATH": str(root)},
    )


def _mltrack_view(root: Path, run_id: str) -> Any:
    """What mltrack's repository reads of a run, in a fresh process."""
    return run_python(
        f"""
        import json
        from mltrack.factory import experiment_repository
        repo = experiment_repository()
        run = repo.get_experiment_sync({run_id!r})
        history = repo.get_experiment_metrics_sync({run_id!r})
        print(json.dumps(dict(
            status=run.status.value, name=run.name, experiment=run.experiment_name,
            description=run.description, tags=sorted(run.tags), config=run.config,
            final=run.final_metrics, ended=run.end_time is not None,
            series={{s.name + (json.dumps(dict(s.context), sort_keys=True) if s.context else ""):
                     [[int(a), float(b), float(c)] for a, b, c in zip(s.steps, s.values, s.timestamps)]
                     for s in history.all_series}},
        )))
        """,
        env={"ML_TRACKING_BACKEND": "wandb", "ML_STORAGE_PATH": str(root)},
    )


def _folder(root: Path, run_id: str) -> Path:
    (folder,) = (root / "wandb").glob(f"offline-run-*-{run_id}")
    return folder


def test_wandb_reads_config_history_and_summary_as_mltrack_does(wandb_root: Path) -> None:
    ids = _log(wandb_root)
    folder = _folder(wandb_root, ids["done"])
    native = leet_summary(folder)
    ours = _mltrack_view(wandb_root, ids["done"])

    # Config: W&B's and mltrack's are the config given, merged with log_params.
    assert native["config"] == ours["config"] == {**CONFIG, "batch_size": 2048}
    # Summary: W&B's latest values and the final metrics are mltrack's final metrics.
    native_summary = {k: float(v) for k, v in native["summary"].items() if not k.startswith("_")}
    assert native_summary.keys() == ours["final"].keys()
    assert all(same(native_summary[k], ours["final"][k]) for k in native_summary)
    assert ours["final"]["win_rate"] == 0.68 and ours["final"]["loss"] == 123.0
    # The run itself, as W&B shows it.
    assert native["state"] == "finished" and native["exit_code"] == 0 and ours["status"] == "completed"
    assert native["project"] == ours["experiment"] == "native-readback"
    assert native["name"] == ours["name"] == "ppo-a"
    assert native["notes"] == ours["description"] == "first try"
    assert sorted(native["tags"]) == ours["tags"] == ["baseline", "late", "ppo v2"]
    assert native["run_id"] == ids["done"]

    # History: every point W&B reads (the last write of a step winning) is mltrack's, time included.
    history = leet_history(folder)
    assert set(history) == {"loss", "reward", "loss{subset=val}", "odd"}
    keyed = {"loss{subset=val}": 'loss{"subset": "val"}'}
    for key, points in history.items():
        want = last_per_step(points)
        got = ours["series"][keyed.get(key, key)]
        assert [p[0] for p in got] == [p[0] for p in want], key
        assert all(same(g[1], w[1]) for g, w in zip(got, want)), key
        assert all(abs(g[2] - w[2]) < 1e-6 for g, w in zip(got, want)), key
    assert [p[1] for p in ours["series"]["loss"]][-1] == 123.0

    # The artifact: a W&B artifact of type "model" with its metadata and the file's MD5, as W&B records one.
    (artifact,) = [r["artifact"] for r in leet_records(folder) if r["type"] == "artifact"]
    (entry,) = artifact["manifest"]["contents"]
    payload = b"policy weights" * 100
    assert (artifact["type"], artifact["name"]) == ("model", "models-policy.zip")
    assert json.loads(artifact["metadata"]) == {"score": 0.9}
    assert entry["path"] == "models/policy.zip" and int(entry["size"]) == len(payload)
    assert entry["digest"] == base64.b64encode(hashlib.md5(payload).digest()).decode()
    assert Path(entry["local_path"]).read_bytes() == payload

    would_sync = sync_dry_run(wandb_root)  # `wandb sync` takes both folders as runs to upload
    assert all(f"run-{run_id}.wandb" in would_sync for run_id in ids.values()), would_sync

    other = leet_summary(_folder(wandb_root, ids["interrupted"]))
    assert other["exit_code"] == 130 and other["state"] != "finished"
    assert _mltrack_view(wandb_root, ids["interrupted"])["status"] == "interrupted"


def _wandb_sdk_run(root: Path) -> Any:
    """An offline run written by W&B's own SDK (``wandb.init``/``log``/``finish``) under ``root``."""
    return run_python(
        f"""
        import json, wandb
        run = wandb.init(project="sdk-project", name="sdk-run", dir={str(root)!r}, mode="offline",
                         config={{"lr": 0.01, "net": {{"width": 64}}}}, tags=["sdk"], notes="from wandb")
        for step in range(5):
            wandb.log({{"loss": 1.0 / (step + 1), "charts/fps": 100.0 + step}}, step=step)
        run.summary["best"] = 0.9
        run.finish()
        print(json.dumps(run.id))
        """,
        env={"WANDB_MODE": "offline"},
    )


def test_an_offline_run_wandb_wrote_reads_back_in_mltrack_as_wandb_shows_it(wandb_root: Path) -> None:
    run_id = _wandb_sdk_run(wandb_root)
    (folder,) = (wandb_root / "wandb").glob(f"offline-run-*-{run_id}")
    native = leet_summary(folder)
    ours = _mltrack_view(wandb_root, mltrack_id(run_id))  # W&B's 8-character id, in mltrack's form
    assert ours["status"] == "completed" and ours["ended"]
    assert ours["experiment"] == "sdk-project" and ours["name"] == "sdk-run"
    assert ours["description"] == "from wandb" and ours["tags"] == ["sdk"]
    assert ours["config"] == native["config"] == {"lr": 0.01, "net": {"width": 64}}
    assert ours["final"] == {k: float(v) for k, v in native["summary"].items() if not k.startswith("_")}
    history = leet_history(folder)
    assert set(history) == set(ours["series"]) == {"loss", "charts/fps"}
    for key, points in history.items():
        assert ours["series"][key] == [list(p) for p in last_per_step(points)]


@pytest.mark.slow
def test_mltrack_copy_moves_a_wandb_offline_run_to_mlflow(wandb_root: Path, tmp_path: Path) -> None:
    """``mltrack copy --from wandb --to mlflow``: a W&B offline run becomes an MLflow run (no W&B server)."""
    _wandb_sdk_run(wandb_root)
    target = tmp_path / "mlflow"
    proc = subprocess.run(
        [sys.executable, "-m", "mltrack", "copy", "--from", "wandb", "--to", "mlflow",
         "--from-option", f"root={wandb_root}", "--to-option", f"tracking_uri={target}", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = run_python(
        f"""
        import json, mlflow
        mlflow.set_tracking_uri("sqlite:///{target}/mlflow.db")
        (run,) = mlflow.search_runs(experiment_names=["sdk-project"], output_format="list")
        client = mlflow.MlflowClient()
        print(json.dumps(dict(params=run.data.params, status=run.info.status,
              loss=[m.value for m in client.get_metric_history(run.info.run_id, "loss")])))
        """
    )
    assert got["status"] == "FINISHED"
    assert got["params"]["lr"] == "0.01"
    assert got["loss"] == [1.0 / (s + 1) for s in range(5)]
    assert json.loads(proc.stdout)  # a report of what was copied
