"""What mltrack stores is native Aim data: Aim's own SDK and web API read it in a fresh process."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import mltrack
from mltrack_aim import AimProcess, configure_aim_backend

from _child import run_python


def _record(aim_repo: Path) -> tuple[str, str, list[float]]:
    configure_aim_backend(repo_path=aim_repo, experiment_name="readback")
    losses = [1.0 / (step + 1) for step in range(500)]
    with mltrack.start_run(config={"learning_rate": 0.0003, "agent": "PPO"}, tags=["sdk"]) as run:
        for step, loss in enumerate(losses):
            run.log_metric("loss", loss, step=step)
            run.log_metric("loss", loss * 2, step=step, context={"subset": "val"})
    with mltrack.start_run(config={"learning_rate": 0.00001}) as slow:
        slow.log_metric("loss", 1.0, step=0)
    mltrack.factory.reset()
    return run.id, slow.id, losses


def test_aim_sdk_in_a_fresh_process_queries_runs_by_hparams(aim_repo: Path) -> None:
    run_id, _, losses = _record(aim_repo)
    found = run_python(
        f"""
        import json
        import aim
        from aim.storage.context import Context
        repo = aim.Repo({str(aim_repo)!r})
        out = {{}}
        for item in repo.query_runs("run.hparams.learning_rate > 0.0001", report_mode=0).iter_runs():
            run = item.run
            steps, (values, _, _) = run.get_metric("loss", Context({{}})).data.numpy()
            val_steps, (val_values, _, _) = run.get_metric("loss", Context({{"subset": "val"}})).data.numpy()
            out[run.hash] = dict(
                steps=steps.tolist(), values=values.tolist(), val=val_values.tolist(),
                experiment=run.experiment, tags=run.tags, active=run.active,
                status=run["mltrack"]["status"],
            )
        print(json.dumps(out))
        """
    )
    assert list(found) == [run_id]
    got = found[run_id]
    assert got["steps"] == list(range(500))
    assert got["values"] == losses
    assert got["val"] == [v * 2 for v in losses]
    assert got["experiment"] == "readback"
    assert got["tags"] == ["sdk"]
    assert got["active"] is False
    assert got["status"] == "completed"


def test_aim_up_web_api_shows_the_run_finished_with_params_and_metrics(
    aim_repo: Path, aim_ui: AimProcess
) -> None:
    run_id, _, losses = _record(aim_repo)

    def get(path: str) -> object:
        with urllib.request.urlopen(aim_ui.url + path, timeout=30) as resp:
            return json.loads(resp.read())

    info = get(f"/api/runs/{run_id}/info/")
    assert isinstance(info, dict)
    assert info["params"]["hparams"] == {"learning_rate": 0.0003, "agent": "PPO"}
    assert info["params"]["mltrack"]["status"] == "completed"
    assert info["props"]["experiment"]["name"] == "readback"
    assert info["props"]["active"] is False and info["props"]["end_time"] is not None
    names = {(t["name"], json.dumps(t["context"], sort_keys=True)) for t in info["traces"]["metric"]}
    assert names == {("loss", "{}"), ("loss", '{"subset": "val"}')}

    body = json.dumps([{"name": "loss", "context": {}}]).encode()
    request = urllib.request.Request(
        aim_ui.url + f"/api/runs/{run_id}/metric/get-batch/",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        (series,) = json.loads(resp.read())
    # The UI's batch endpoint samples long series (to ~200 points): every sample must match.
    assert series["iters"][0] == 0 and series["iters"][-1] == 499
    assert [losses[step] for step in series["iters"]] == series["values"]


def test_runs_written_by_aim_itself_are_read_by_mltrack(aim_repo: Path) -> None:
    run_python(
        f"""
        import aim
        run = aim.Run(repo={str(aim_repo)!r}, experiment="plain-aim", system_tracking_interval=None,
                      capture_terminal_logs=False)
        run["hparams"] = {{"lr": 0.1}}
        for step in range(10):
            run.track(step * 0.5, name="loss", step=step)
        run.close()
        print(0)
        """
    )
    configure_aim_backend(repo_path=aim_repo)
    repo = mltrack.factory.experiment_repository()
    (summary,) = repo.list_experiments_sync(name="plain-aim")
    assert summary.status is mltrack.ExperimentStatus.COMPLETED
    assert summary.config == {"lr": 0.1}
    series = repo.get_experiment_metrics_sync(summary.experiment_id).series("loss")
    assert [float(v) for v in series.values] == [s * 0.5 for s in range(10)]


def test_reads_and_writes_work_while_aim_up_indexes_the_same_repository(
    aim_repo: Path, aim_ui: AimProcess
) -> None:
    from _child import popen_python

    writer = """
        import mltrack
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={repo!r}, experiment_name="busy-index")
        for i in range(5):
            with mltrack.start_run(config={{"learning_rate": 0.001, "i": i}}) as run:
                for step in range(200):
                    run.log_metric("loss", 1.0 / (step + 1), step=step)
    """
    children = [popen_python(writer.format(repo=str(aim_repo))) for _ in range(2)]
    reader = f"""
        import json, mltrack
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={str(aim_repo)!r})
        repo = mltrack.factory.experiment_repository()
        runs = repo.list_experiments_sync(name="busy-index")
        print(json.dumps([[r.status.value, len(repo.get_experiment_metrics_sync(r.experiment_id))] for r in runs]))
    """
    while any(c.poll() is None for c in children):
        run_python(reader)  # must not fail while runs are being written and aim up indexes
    for child in children:
        assert child.wait() == 0, child.stderr.read() if child.stderr else ""
    assert sorted(run_python(reader)) == [["completed", 200]] * 10
    found = run_python(
        f"""
        import json, aim
        repo = aim.Repo({str(aim_repo)!r})
        print(json.dumps(len(list(repo.query_runs("run.hparams.learning_rate > 0.0001", report_mode=0).iter_runs()))))
        """
    )
    assert found == 10
