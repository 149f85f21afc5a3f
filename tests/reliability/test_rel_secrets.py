"""Issue 19 case 5: no secret reaches a store, ``mltrack show`` or ``mltrack export``.

A property test hides random secrets in every place a user passes values: the run config
(secret-named keys at any depth, in lists and tuples, passwords in URLs, ``--password x``
argument lists), ``log_params``, artifact metadata and metric contexts, with the key names
users write (``pwd``, ``Authorization``, ``cookie``, ``session``, ``private_key``, ...). Each
run goes to a real store in the test's folder (Aim, MLflow); then a fresh process reads the
store with the store's own SDK (Aim's ``run["hparams"]``, which Aim's UI shows;
``MlflowClient.get_run``), ``mltrack show`` and ``mltrack export`` print every run, and every
file of the store is searched byte by byte: no secret may appear anywhere.
``MLTRACK_KEEP_SECRETS=1`` still keeps them, on purpose.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mltrack
from mltrack.cli.app import main as mltrack_cli
from mltrack.config import configure_backend

from _reliability import record, run_python

EXAMPLES = 6
SECRET_KEYS = [
    "password",
    "pwd",
    "Authorization",
    "cookie",
    "session",
    "private_key",
    "api_key",
    "X-Api-Key",
    "hf_token",
    "client_secret",
    "sessionId",
    "db_passwd",
]
# A secret is a marker no store writes by itself, so finding it anywhere is a leak.
SECRETS = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=10, max_size=16).map(lambda s: "Zq7" + s)


@st.composite
def secret_runs(draw: st.DrawFn) -> dict[str, Any]:
    """What one run is given, with a fresh secret in every place a value can go."""
    found: list[str] = []

    def secret() -> str:
        value = draw(SECRETS)
        found.append(value)
        return value

    def key() -> str:
        return draw(st.sampled_from(SECRET_KEYS))

    nested: Any = {key(): secret(), "host": "db.example"}
    for _ in range(draw(st.integers(0, 2))):  # a list or tuple of it, some levels down
        nested = draw(st.sampled_from([list, tuple]))([nested, 1])
    config = {
        "learning_rate": 3e-4,
        key(): secret(),
        "servers": nested,
        "db_url": f"postgresql://trainer:{secret()}@db.example:5432/runs",
        "argv": ["train.py", "--password", secret(), "--lr", "3e-4"],
        "headers": {"Authorization": f"Bearer {secret()}", "Cookie": f"sid={secret()}"},
    }
    params = {
        key(): secret(),
        "extra": [{key(): secret()}],
        "callback": f"https://h.example/cb?token={secret()}",
    }
    metadata = {key(): secret(), "source": f"s3://ak:{secret()}@bucket/model.zip", "epoch": 3}
    context = {"subset": "val", key(): secret()}
    return {"config": config, "params": params, "metadata": metadata, "context": context, "secrets": found}


def _store_dump(backend: str, store: Path, run_ids: list[str]) -> str:
    """Everything the store's own SDK shows of the runs, read by a fresh process, as text."""
    if backend == "aim":
        code = f"""
            import json
            from aim import Repo
            repo = Repo({str(store)!r})
            out = []
            for run_id in {run_ids!r}:
                run = repo.get_run(run_id)
                out.append(dict(
                    hparams=run["hparams"], mltrack=run.get("mltrack"), name=run.name,
                    contexts=[[name, ctx.to_dict()] for name, ctx, _ in run.iter_metrics_info()],
                ))
            print(json.dumps(out, default=str))
            """
    else:
        code = f"""
            import json
            from mlflow import MlflowClient
            client = MlflowClient({f"sqlite:///{store}/mlflow.db"!r})
            out = []
            experiments = [e.experiment_id for e in client.search_experiments()]
            for found in client.search_runs(experiments):
                run = client.get_run(found.info.run_id)
                out.append(dict(params=run.data.params, tags=run.data.tags, metrics=sorted(run.data.metrics),
                                name=run.info.run_name,
                                artifacts=[a.path for a in client.list_artifacts(run.info.run_id)]))
            print(json.dumps(out, default=str))
            """
    return json.dumps(run_python(code, env={"MLFLOW_DISABLE_TELEMETRY": "true"}))


def _cli_output(capsys: pytest.CaptureFixture[str], run_ids: list[str], out: Path) -> str:
    """What ``mltrack show`` (table and --json) and ``mltrack export`` (JSON, CSV) print or write."""
    texts = []
    for run_id in run_ids:
        for args in (["show", run_id], ["show", "--json", run_id]):
            assert mltrack_cli(args) == 0
            texts.append(capsys.readouterr().out)
    for fmt in ("json", "csv"):
        target = out / f"export.{fmt}"
        assert mltrack_cli(["export", *run_ids, "--format", fmt, "--out", str(target)]) == 0
        texts.extend(p.read_text() for p in out.glob("export*"))
    capsys.readouterr()
    return "\n".join(texts)


def _files_holding(store: Path, secrets: list[str]) -> dict[str, list[str]]:
    """Which files of the store hold which secret bytes."""
    wanted = [s.encode() for s in secrets]
    out: dict[str, list[str]] = {}
    for path in store.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [s.decode() for s in wanted if s in data]
            if hits:
                out[str(path.relative_to(store))] = hits
    return out


def _store(backend: str, request: pytest.FixtureRequest) -> Path:
    store: Path = request.getfixturevalue("aim_repo" if backend == "aim" else "mlflow_dir")
    configure_backend(backend, storage_path=str(store))
    return store


def _log(case: dict[str, Any], artifact: Path) -> str:
    with mltrack.start_run("secrets", case["config"]) as run:
        run.log_params(case["params"])
        run.log_metric("loss", 0.5, step=1, context=case["context"])
        run.log_artifact(artifact, "model", metadata=case["metadata"])
    return run.id


@pytest.mark.parametrize("backend", ["aim", "mlflow"])
def test_no_secret_reaches_the_store_show_or_export(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = _store(backend, request)
    artifact = tmp_path / "model.zip"
    artifact.write_bytes(b"weights")
    run_ids: list[str] = []
    secrets: list[str] = []
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(secret_runs())
    def log_one(case: dict[str, Any]) -> None:
        run_ids.append(_log(case, artifact))
        secrets.extend(case["secrets"])

    log_one()
    mltrack.factory.reset()  # drain and stop the writer: everything is stored
    logged = time.monotonic() - started

    sdk = _store_dump(backend, store, run_ids)
    cli = _cli_output(capsys, run_ids, tmp_path)
    files = _files_holding(store, secrets)
    in_sdk = [s for s in secrets if s in sdk]
    in_cli = [s for s in secrets if s in cli]
    record(
        "secrets-property",
        backend=backend,
        runs=len(run_ids),
        secrets=len(secrets),
        in_sdk=len(in_sdk),
        in_cli=len(in_cli),
        files_with_secrets=len(files),
        seconds=round(time.monotonic() - started, 1),
        logging_seconds=round(logged, 1),
    )
    # The reads saw the runs (so finding nothing means something): the masks and the plain values.
    assert "***" in sdk and "db.example" in sdk and "***" in cli
    assert in_sdk == [], f"{backend}'s SDK shows {in_sdk}"
    assert in_cli == [], f"mltrack show/export print {in_cli}"
    assert files == {}, f"secret bytes in {files}"


def test_secrets_are_kept_when_the_user_opts_in(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masking happens in the trainer, the same for every store: one store shows the opt-in."""
    backend = "aim"
    monkeypatch.setenv("MLTRACK_KEEP_SECRETS", "1")
    store = _store(backend, request)
    artifact = tmp_path / "model.zip"
    artifact.write_bytes(b"weights")
    case = {
        "config": {"pwd": "Zq7keptconfig", "db": "https://u:Zq7kepturl@h.example/x"},
        "params": {"cookie": "Zq7keptparam"},
        "metadata": {"private_key": "Zq7keptmeta"},
        "context": {"session": "Zq7keptctx"},
    }
    run_id = _log(case, artifact)
    mltrack.factory.reset()
    sdk = _store_dump(backend, store, [run_id])
    kept = [
        s for s in ("Zq7keptconfig", "Zq7kepturl", "Zq7keptparam", "Zq7keptmeta", "Zq7keptctx") if s in sdk
    ]
    record("secrets-kept-on-opt-in", backend=backend, kept=len(kept), of=5)
    assert len(kept) == 5, f"MLTRACK_KEEP_SECRETS=1 kept only {kept}"
