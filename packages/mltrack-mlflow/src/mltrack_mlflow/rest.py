"""Reading a tracking server through MLflow's REST API, without importing mlflow.

Importing mlflow takes one to three seconds here, most of a ``mltrack ls`` against a server.
Listing, finding and summarising runs and reading their histories need five documented
endpoints (experiments/search and get, runs/search and get, metrics/get-history), so reads of an ``http(s)://`` store go through this small client;
mlflow is imported only when something is written. It answers with the few fields the backend
reads of MLflow's entities (``run.info.*``, ``run.data.tags/params/metrics``, ``page.token``),
and speaks what MLflow's client speaks to a plain server: basic auth (environment or
``~/.mlflow/credentials``), a bearer token, ``MLFLOW_TRACKING_INSECURE_TLS``, a server
certificate, MLflow's request timeout and retries. Anything more (AWS SigV4, auth plugins,
client certificates, workspaces, request-header plugins) makes :func:`usable` say no, and the
backend reads through MLflow's own REST store.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import random
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs

__all__ = ["ACTIVE_ONLY", "RestError", "RestReads", "usable"]

ACTIVE_ONLY = 1
"""MLflow's ``ViewType.ACTIVE_ONLY``: runs and experiments not deleted."""

_VIEW_TYPES = {1: "ACTIVE_ONLY", 2: "DELETED_ONLY", 3: "ALL"}
_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})  # what MLflow's client retries
_UNSUPPORTED_SETTINGS = ("MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_CLIENT_CERT_PATH", "MLFLOW_WORKSPACE")


def _mlflow_env(name: str) -> str | None:
    """MLflow's own client variable ``name``, read as MLflow's client reads it.

    These belong to MLflow (its documentation is theirs), so they are not in mltrack's
    settings table; mltrack's own variables go through :func:`mltrack.settings.env`.
    """
    return os.environ.get(name)


def _flag(name: str) -> bool:
    return (_mlflow_env(name) or "").strip().lower() in ("1", "true", "yes", "on")


def usable() -> bool:
    """True unless MLflow's client would do something this one does not (see the module's text)."""
    if any((_mlflow_env(name) or "").strip() for name in _UNSUPPORTED_SETTINGS):
        return False
    if _flag("MLFLOW_TRACKING_AWS_SIGV4"):
        return False
    return not entry_points(group="mlflow.request_header_provider")


class RestError(Exception):
    """An error the server answered (or could not be reached), shaped like ``MlflowException``."""

    def __init__(self, message: str, error_code: str = "INTERNAL_ERROR") -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code


@attrs.frozen
class RunInfo:
    """The fields of MLflow's ``RunInfo`` the backend reads."""

    run_id: str
    experiment_id: str
    run_name: str | None
    status: str
    start_time: int | None
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str


@attrs.frozen
class RunData:
    """MLflow's ``RunData``: tags, params and each metric's latest value, as dicts."""

    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]


@attrs.frozen
class Run:
    """One run as the server returned it."""

    info: RunInfo
    data: RunData


@attrs.frozen
class Experiment:
    """An experiment's id and name."""

    experiment_id: str
    name: str
    lifecycle_stage: str


@attrs.frozen
class Point:
    """One metric point, as MLflow's ``Metric``."""

    key: str
    value: float
    timestamp: int
    step: int


class Page(list[Any]):
    """One page of results and the token of the next (``None`` on the last), as MLflow's ``PagedList``."""

    def __init__(self, items: Sequence[Any], token: str | None) -> None:
        super().__init__(items)
        self.token = token


def _pairs(items: Any) -> dict[str, str]:
    return {str(i["key"]): str(i.get("value", "")) for i in items or ()}


def _ms(value: Any) -> int | None:
    return None if value in (None, "") else int(value)  # int64 may come as a JSON string


def _run(raw: Mapping[str, Any]) -> Run:
    info = raw.get("info") or {}
    data = raw.get("data") or {}
    return Run(
        info=RunInfo(
            run_id=str(info.get("run_id") or info.get("run_uuid")),
            experiment_id=str(info.get("experiment_id")),
            run_name=info.get("run_name") or None,
            status=str(info.get("status", "RUNNING")),
            start_time=_ms(info.get("start_time")),
            end_time=_ms(info.get("end_time")),
            artifact_uri=str(info.get("artifact_uri", "")),
            lifecycle_stage=str(info.get("lifecycle_stage", "active")),
        ),
        data=RunData(
            tags=_pairs(data.get("tags")),
            params=_pairs(data.get("params")),
            # NaN and the infinities come as "NaN", "Infinity", "-Infinity": float() reads those.
            metrics={str(p["key"]): float(p["value"]) for p in data.get("metrics") or ()},
        ),
    )


def _credentials() -> tuple[str | None, str | None]:
    username = _mlflow_env("MLFLOW_TRACKING_USERNAME")
    password = _mlflow_env("MLFLOW_TRACKING_PASSWORD")
    path = Path.home() / ".mlflow" / "credentials"
    if (username is None or password is None) and path.is_file():
        parser = configparser.ConfigParser()
        parser.read(path)
        if parser.has_section("mlflow"):
            username = username or parser["mlflow"].get("mlflow_tracking_username")
            password = password or parser["mlflow"].get("mlflow_tracking_password")
    return username, password


def _env_number(name: str, default: float) -> float:
    raw = (_mlflow_env(name) or "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


class RestReads:
    """The read calls of MLflow's tracking store, over the server's REST API."""

    def __init__(self, uri: str) -> None:
        self.base = uri.rstrip("/")
        self.headers = {"Content-Type": "application/json", "User-Agent": "mltrack-mlflow"}
        username, password = _credentials()
        token = _mlflow_env("MLFLOW_TRACKING_TOKEN")
        if username and password:
            pair = base64.b64encode(f"{username}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {pair}"
        elif token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.context: ssl.SSLContext | None = None
        if self.base.startswith("https://"):
            self.context = ssl.create_default_context(
                cafile=_mlflow_env("MLFLOW_TRACKING_SERVER_CERT_PATH") or None
            )
            if _flag("MLFLOW_TRACKING_INSECURE_TLS"):  # as MLflow's client: no certificate check
                self.context.check_hostname = False
                self.context.verify_mode = ssl.CERT_NONE
        # MLflow's own client settings, with its defaults.
        self.timeout = _env_number("MLFLOW_HTTP_REQUEST_TIMEOUT", 120)
        self.max_retries = int(_env_number("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7))
        self.backoff_factor = _env_number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2)
        self.backoff_jitter = _env_number("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 1.0)

    def _call(
        self, endpoint: str, *, body: Mapping[str, Any] | None = None, query: Mapping[str, Any] | None = None
    ) -> Any:
        url = f"{self.base}/api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        attempt = 0
        while True:
            request = urllib.request.Request(
                url, data=data, headers=self.headers, method="GET" if data is None else "POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                    return json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                text = exc.read().decode("utf-8", "replace")
                if exc.code in _TRANSIENT and attempt < self.max_retries:
                    attempt += 1
                    self._pause(attempt)
                    continue
                try:
                    answer = json.loads(text)
                except ValueError:
                    answer = {}
                if isinstance(answer, dict) and "error_code" in answer:
                    raise RestError(str(answer.get("message", text)), str(answer["error_code"])) from None
                raise RestError(f"{endpoint}: HTTP {exc.code} {exc.reason}: {text[:500]}") from None
            except (urllib.error.URLError, OSError) as exc:  # refused, reset, timed out
                if attempt < self.max_retries:
                    attempt += 1
                    self._pause(attempt)
                    continue
                reason = getattr(exc, "reason", exc)
                raise RestError(f"cannot reach {self.base} ({endpoint}): {reason}") from None

    def _pause(self, attempt: int) -> None:
        # As urllib3's Retry under MLflow's client: exponential, at most 120 s, plus jitter.
        time.sleep(
            min(self.backoff_factor * 2 ** (attempt - 1), 120.0) + random.uniform(0, self.backoff_jitter)
        )

    def search_experiments(
        self, view_type: int = ACTIVE_ONLY, max_results: int = 1000, page_token: str | None = None, **_: Any
    ) -> Page:
        """Experiments, a page at a time."""
        body: dict[str, Any] = {"view_type": _VIEW_TYPES[int(view_type)], "max_results": max_results}
        if page_token:
            body["page_token"] = page_token
        answer = self._call("experiments/search", body=body)
        found = [
            Experiment(str(e["experiment_id"]), str(e["name"]), str(e.get("lifecycle_stage", "active")))
            for e in answer.get("experiments") or ()
        ]
        return Page(found, answer.get("next_page_token") or None)

    def get_experiment(self, experiment_id: str) -> Experiment:
        """One experiment by id."""
        e = self._call("experiments/get", query={"experiment_id": experiment_id})["experiment"]
        return Experiment(str(e["experiment_id"]), str(e["name"]), str(e.get("lifecycle_stage", "active")))

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str,
        run_view_type: int,
        max_results: int,
        order_by: Sequence[str] | None = None,
        page_token: str | None = None,
    ) -> Page:
        """Runs of these experiments matching ``filter_string``, a page at a time."""
        body: dict[str, Any] = {
            "experiment_ids": [str(i) for i in experiment_ids],
            "filter": filter_string,
            "run_view_type": _VIEW_TYPES[int(run_view_type)],
            "max_results": max_results,
            "order_by": list(order_by or ()),
        }
        if page_token:
            body["page_token"] = page_token
        answer = self._call("runs/search", body=body)
        return Page([_run(r) for r in answer.get("runs") or ()], answer.get("next_page_token") or None)

    def get_run(self, run_id: str) -> Run:
        """One run by MLflow run id (``RestError`` ``RESOURCE_DOES_NOT_EXIST`` if there is none)."""
        return _run(self._call("runs/get", query={"run_id": run_id})["run"])

    def get_metric_history(
        self, run_id: str, metric_key: str, max_results: int | None = None, page_token: str | None = None
    ) -> Page:
        """One metric's points (key, value, timestamp, step), a page at a time (all in one, unless paged)."""
        query: dict[str, Any] = {"run_id": run_id, "run_uuid": run_id, "metric_key": metric_key}
        if max_results is not None:
            query["max_results"] = max_results
        if page_token:
            query["page_token"] = page_token
        answer = self._call("metrics/get-history", query=query)
        points = [
            Point(str(p["key"]), float(p["value"]), int(p.get("timestamp", 0)), int(p.get("step", 0)))
            for p in answer.get("metrics") or ()
        ]
        return Page(points, answer.get("next_page_token") or None)
