"""Case 8, security: artifact names stay in the store, the UI binds to loopback, no unpickling of
stored data, secrets in configs are masked.

Complements tests/core/test_api.py (masking on the memory backend) and
tests/cli/test_cli_aim.py (``mltrack ui`` on loopback, stopped with its children).
"""

from __future__ import annotations

import ast
import os
import pickle
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest

import mltrack
from mltrack_aim import configure_aim_backend
from mltrack_aim.processes import free_port

from _reliability import child_env, read_run, record, run_python

PACKAGES = Path(__file__).resolve().parents[2] / "packages"

ESCAPING_NAMES = [
    "../escaped-one-up.bin",
    "../../escaped-two-up.bin",
    "weights/../../../escaped-nested.bin",
    "ABSOLUTE",  # replaced by an absolute path under the test's folder
]


def _files_outside(root: Path, store: Path) -> list[Path]:
    return [p for p in root.rglob("escaped*") if store not in p.parents]


@pytest.mark.parametrize("name", ESCAPING_NAMES)
def test_an_artifact_name_never_writes_outside_the_runs_artifact_store(
    aim_repo: Path, tmp_path: Path, name: str
) -> None:
    """A name with ../ or an absolute path is refused (ArtifactError) or kept inside the store."""
    if name == "ABSOLUTE":
        name = str(tmp_path / "escaped-absolute.bin")
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    store = aim_repo / "aim_artifacts"
    configure_aim_backend(repo_path=aim_repo)
    message = ""
    with mltrack.start_run("artifact-names") as run:
        try:
            run.log_artifact(source, "model", name=name)
        except mltrack.ValidationError as exc:
            message = str(exc)
    refused = bool(message)
    assert not refused or "artifact" in message
    run_store = store / run.id
    outside = [p for p in tmp_path.rglob("escaped*") if run_store not in p.parents]
    record("artifact-name", name=name, refused=refused, files_outside_run_store=len(outside))
    assert outside == [], f"{name!r} wrote {outside}"


def test_a_plain_artifact_name_with_folders_stays_in_the_runs_store(aim_repo: Path, tmp_path: Path) -> None:
    """The control: ``weights/model.bin`` is stored under the run's own artifact folder."""
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    configure_aim_backend(repo_path=aim_repo)
    with mltrack.start_run("artifact-names") as run:
        run.log_artifact(source, "model", name="weights/model.bin")
    assert (aim_repo / "aim_artifacts" / run.id / "weights" / "model.bin").read_bytes() == b"weights"


def test_mltrack_ui_listens_on_loopback_only(aim_repo: Path) -> None:
    """``mltrack ui`` without --host listens on 127.0.0.1 only, and Ctrl-C stops it and its children."""
    port = free_port()
    env = child_env({"ML_TRACKING_BACKEND": "aim", "ML_STORAGE_PATH": str(aim_repo)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mltrack", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the UI answers
        assert line.startswith(f"aim UI: http://127.0.0.1:{port}"), line + (
            proc.stderr.read() if proc.stderr else ""
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/projects/", timeout=30) as response:
            assert response.status == 200
        listening = {
            c.laddr.ip
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        record("ui-bind", port=port, listening_on=sorted(listening))
        assert listening == {"127.0.0.1"}
    finally:
        children = psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    _gone, alive = psutil.wait_procs(children, timeout=15)
    assert alive == [], f"left running: {alive}"


_UNPICKLERS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("marshal", "load"),
    ("marshal", "loads"),
    ("shelve", "open"),
    ("dill", "load"),
    ("dill", "loads"),
    ("cloudpickle", "load"),
    ("cloudpickle", "loads"),
    ("joblib", "load"),
    ("torch", "load"),
}


def _unpickling_calls() -> set[tuple[str, str]]:
    found = set()
    for path in PACKAGES.glob("*/src/**/*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) in _UNPICKLERS:
                    found.add((path.relative_to(PACKAGES).as_posix(), f"{node.value.id}.{node.attr}"))
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                found.add((path.relative_to(PACKAGES).as_posix(), "allow_pickle"))
    return found


def test_no_mltrack_code_unpickles_stored_data() -> None:
    """The only unpickling in mltrack reads a pipe from its own parent process, never anything stored.

    The writer process reads its trainer's pipe; mltrack-redis's publisher process reads its
    trainer's pipe (what it receives from Redis is JSON); the spool reads files this user wrote
    in a folder only this user may write to (checked below).
    """
    assert _unpickling_calls() == {
        ("mltrack-core/src/mltrack/_writer_process.py", "pickle.loads"),
        ("mltrack-redis/src/mltrack_redis/_process.py", "pickle.loads"),
        ("mltrack-core/src/mltrack/spool.py", "pickle.loads"),
    }


def test_a_spool_planted_by_another_user_or_in_a_shared_folder_is_never_unpickled(tmp_path: Path) -> None:
    from mltrack.spool import encode_record, pending_spools, read_records

    if os.geteuid() != 0:
        pytest.skip("planting another user's file needs root")
    marker = tmp_path / "UNPICKLED"
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o700)
    planted = folder / "20260101T000000-1-deadbeef.spool"
    planted.write_bytes(encode_record({"format": 1}) + encode_record((1, _Canary(str(marker)))))
    os.chown(planted, 12345, 12345)  # another user's file (the suite runs as root in CI)
    with pytest.raises(PermissionError, match="not to this user"):
        read_records(planted)
    assert pending_spools(folder) == []
    os.chown(planted, os.geteuid(), os.getegid())
    folder.chmod(0o777)  # a folder anyone may write to
    with pytest.raises(PermissionError, match="other users"):
        read_records(planted)
    assert not marker.exists()


class _Canary:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.marker, "w"))


def test_reading_a_store_full_of_pickles_unpickles_nothing(aim_repo: Path, tmp_path: Path) -> None:
    """Pickles planted as an artifact and in the config are never loaded by reads, the CLI or export."""
    marker = tmp_path / "UNPICKLED"
    payload = pickle.dumps(_Canary(str(marker)))
    model = tmp_path / "model.pkl"
    model.write_bytes(payload)
    configure_aim_backend(repo_path=aim_repo)
    with mltrack.start_run("pickles", config={"blob": payload, "note": payload.decode("latin-1")}) as run:
        run.log_metric("loss", 1.0, step=0)
        run.log_artifact(model, "model")
    mltrack.factory.reset()
    seen = run_python(
        f"""
        import json, subprocess, sys, mltrack
        from mltrack_aim import configure_aim_backend
        configure_aim_backend(repo_path={str(aim_repo)!r})
        repo = mltrack.factory.experiment_repository()
        runs = repo.list_experiments_sync()
        arts = repo.list_artifacts_sync({run.id!r})
        points = len(repo.get_experiment_metrics_sync({run.id!r}))
        env = dict(ML_TRACKING_BACKEND="aim", ML_STORAGE_PATH={str(aim_repo)!r})
        import os
        for args in (["show", {run.id!r}], ["export", {run.id!r}, "--out", {str(tmp_path / "out.csv")!r}]):
            subprocess.run([sys.executable, "-m", "mltrack", *args], check=True, capture_output=True,
                           env={{**os.environ, **env}})
        print(json.dumps(dict(runs=len(runs), artifacts=len(arts), points=points)))
        """
    )
    assert seen == {"runs": 1, "artifacts": 1, "points": 1}
    assert not marker.exists(), "stored data was unpickled"


SECRETS = {
    "password": "s3cret-pass-0001",
    "api_key": "s3cret-apikey-0002",
    "AWS_SECRET_ACCESS_KEY": "s3cret-aws-0003",
    "private_key": "s3cret-private-0004",
    "db": {"user": "alice", "token": "s3cret-token-0005"},
}


def _secret_bytes_in(root: Path) -> list[str]:
    needles = [v.encode() for v in ("s3cret-pass-0001", "s3cret-apikey-0002", "s3cret-aws-0003")]
    needles += [b"s3cret-private-0004", b"s3cret-token-0005", b"s3cret-param-0006"]
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.name}:{n.decode()}" for n in needles if n in data]
    return hits


@pytest.mark.parametrize("keep", [False, True], ids=["masked", "kept-on-opt-in"])
def test_config_values_named_like_secrets_are_masked_on_disk(
    aim_repo: Path, monkeypatch: pytest.MonkeyPatch, keep: bool
) -> None:
    """Secret-looking config values read back as *** and appear in no file, unless the user opts in."""
    if keep:
        monkeypatch.setenv("MLTRACK_KEEP_SECRETS", "1")
    configure_aim_backend(repo_path=aim_repo)
    with mltrack.start_run("secrets", config={**SECRETS, "learning_rate": 0.001}) as run:
        run.log_params({"github_token": "s3cret-param-0006", "batch_size": 64})
        run.log_metric("loss", 1.0, step=0)
    mltrack.factory.reset()
    config = read_run(str(aim_repo), run.id)["config"]
    hits = _secret_bytes_in(aim_repo)
    record("secrets", keep=keep, config=config, secret_hits_on_disk=len(hits))
    assert config["learning_rate"] == 0.001 and config["batch_size"] == 64
    assert config["db"]["user"] == "alice"
    if keep:
        assert config["password"] == "s3cret-pass-0001" and config["github_token"] == "s3cret-param-0006"
        assert config["db"]["token"] == "s3cret-token-0005"
    else:
        masked = [config[k] for k in ("password", "api_key", "AWS_SECRET_ACCESS_KEY", "private_key")]
        assert masked == ["***"] * 4
        assert config["db"]["token"] == "***" and config["github_token"] == "***"
        assert hits == [], hits


def test_aim_helpers_default_to_loopback() -> None:
    """start_aim_ui and start_aim_server listen on 127.0.0.1 unless told otherwise."""
    import inspect

    from mltrack_aim.processes import start_aim_server, start_aim_ui

    for fn in (start_aim_ui, start_aim_server):
        assert inspect.signature(fn).parameters["host"].default == "127.0.0.1"
    assert os.environ.get("MLTRACK_UI_HOST") is None
