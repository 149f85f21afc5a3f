"""Runs logged through mltrack, read back in a fresh process with MLflow's own API.

The writer is a separate process (mltrack's default for this backend) and the readers are
fresh interpreters, so nothing is served from a cache: what MLflow shows is what is stored.
"""

from __future__ import annotations

from pathlib import Path

from _child import run_python

CONFIG = {
    "agent_type": "PPO",
    "learning_rate": 0.0003,
    "layers": [64, 64],
    "opt": {"beta": 0.9, "eps": 1e-08, "schedule": {"kind": "linear"}},
    "use_gae": True,
    "seed": None,
}


def _log(store: Path) -> dict[str, str]:
    """Log two runs through mltrack's public API in a child process; return their ids."""
    return run_python(
        f"""
        import json, mltrack
        from mltrack import ExperimentStatus
        with mltrack.start_run("native-readback", {CONFIG!r}, name="ppo-a", tags=["baseline", "ppo v2"],
                               description="first try") as run:
            for step in range(0, 50, 10):
                run.log_metrics({{"loss": 1.0 / (step + 1), "reward": step * 2.0}}, step=step)
            run.log_metric("loss", 123.0, step=40)  # a later write of step 40 replaces the first
            run.log_metric("loss", 0.5, step=0, context={{"subset": "val"}})
            run.log_params({{"batch_size": 2048}})
            run.set_tags(["late"])
        failed = mltrack.start_run("native-readback", name="ppo-b")
        failed.log_metric("loss", 9.0, step=1)
        failed.finish(ExperimentStatus.INTERRUPTED)
        print(json.dumps({{"done": run.id, "killed": failed.id}}))
        """,
        env={"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(store)},
    )


def test_mlflow_search_runs_and_metric_history_show_mltrack_runs(mlflow_dir: Path) -> None:
    ids = _log(mlflow_dir)
    got = run_python(
        f"""
        import json, sys
        import mlflow
        from mlflow import MlflowClient
        mlflow.set_tracking_uri("sqlite:///{mlflow_dir}/mlflow.db")
        df = mlflow.search_runs(experiment_names=["native-readback"], output_format="list")
        out = {{}}
        client = MlflowClient()
        for run in df:
            tags = run.data.tags
            history = {{
                key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                for key in run.data.metrics
            }}
            out[tags["mltrack.run_id"]] = dict(
                name=run.info.run_name, status=run.info.status, params=run.data.params,
                metrics=run.data.metrics, tags=tags, history=history,
                end=run.info.end_time is not None,
            )
        frame = mlflow.search_runs(experiment_names=["native-readback"])
        out["columns"] = sorted(frame.columns)
        out["frame_len"] = len(frame)
        print(json.dumps(out))
        """
    )
    assert got["frame_len"] == 2
    assert {"params.learning_rate", "params.opt.beta", "metrics.loss", "tags.mltrack.run_id"} <= set(
        got["columns"]
    )

    done = got[ids["done"]]
    assert done["name"] == "ppo-a"
    assert done["status"] == "FINISHED" and done["end"]
    assert done["params"] == {
        "agent_type": "PPO",
        "learning_rate": "0.0003",
        "layers": "[64, 64]",
        "opt.beta": "0.9",
        "opt.eps": "1e-08",
        "opt.schedule.kind": "linear",
        "use_gae": "True",
        "seed": "None",
        "batch_size": "2048",
    }
    tags = done["tags"]
    assert tags["mlflow.runName"] == "ppo-a"
    assert tags["mlflow.note.content"] == "first try"
    assert tags["mltrack.tag.baseline"] == "baseline"
    assert tags["mltrack.tag.ppo v2"] == "ppo v2"
    assert tags["mltrack.tag.late"] == "late"
    assert tags["mltrack.status"] == "completed"
    # MLflow holds the points with their steps; a step written twice in one batch is stored once
    history = done["history"]
    assert history["reward"] == [[s, s * 2.0] for s in range(0, 50, 10)]
    loss = history["loss"]
    assert [p for p in loss if p[0] != 40] == [[s, 1.0 / (s + 1)] for s in range(0, 40, 10)]
    assert [40, 123.0] in loss
    (val_key,) = [k for k in history if k.startswith("loss:subset:val")]
    assert history[val_key] == [[0, 0.5]]
    assert done["metrics"]["reward"] == 80.0

    killed = got[ids["killed"]]
    assert killed["status"] == "KILLED"
    assert killed["history"] == {"loss": [[1, 9.0]]}

    # ... and mltrack reads the same runs back exactly, nested config, context and all.
    back = run_python(
        f"""
        import json
        from mltrack.factory import experiment_repository
        repo = experiment_repository()
        run = repo.get_experiment_sync({ids["done"]!r})
        history = repo.get_experiment_metrics_sync(run.experiment_id)
        loss = history.series("loss")
        print(json.dumps(dict(
            config=run.config, tags=sorted(run.tags), status=run.status.value, name=run.name,
            description=run.description, experiment=run.experiment_name,
            loss=list(zip(loss.steps, loss.values)),
            val=list(history.series("loss", {{"subset": "val"}}).values),
            killed=repo.get_experiment_sync({ids["killed"]!r}).status.value,
        )))
        """,
        env={"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(mlflow_dir)},
    )
    assert back["config"] == {**CONFIG, "batch_size": 2048}
    assert back["tags"] == ["baseline", "late", "ppo v2"]
    assert back["status"] == "completed"
    assert (back["name"], back["description"], back["experiment"]) == (
        "ppo-a",
        "first try",
        "native-readback",
    )
    assert back["loss"] == [[s, 123.0 if s == 40 else 1.0 / (s + 1)] for s in range(0, 50, 10)]
    assert back["val"] == [0.5]
    assert back["killed"] == "interrupted"


def test_training_process_never_imports_mlflow(mlflow_dir: Path) -> None:
    got = run_python(
        """
        import json, sys, mltrack
        with mltrack.start_run("no-import") as run:
            run.log_metric("loss", 1.0, step=0)
        print(json.dumps(dict(mlflow="mlflow" in sys.modules, run=run.id)))
        """,
        env={"ML_TRACKING_BACKEND": "mlflow", "ML_STORAGE_PATH": str(mlflow_dir)},
    )
    assert got["mlflow"] is False
