"""Secret masking, blank names, artifact names per file system and exit statuses: the pure rules.

The stores' side (Aim and MLflow read back by their own SDKs, ``mltrack show`` and
``export``) is in tests/reliability/test_rel_secrets.py and its siblings.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import mltrack
from mltrack.authoring import MAX_ARTIFACT_PART_BYTES, check_artifact_name
from mltrack.errors import InvalidNameError
from mltrack.factory import experiment_repository
from mltrack.models import (
    MASK,
    ExperimentRun,
    is_secret_name,
    mask_context,
    mask_secrets,
    mask_text,
    to_context,
)
from mltrack.tracker import exit_status

SECRET_KEYS = [
    "password",
    "db_password",
    "passwd",
    "pwd",
    "Authorization",
    "Proxy-Authorization",
    "cookie",
    "Set-Cookie",
    "session",
    "session_id",
    "sessionId",
    "private_key",
    "privateKey",
    "api_key",
    "X-Api-Key",
    "apikey",
    "AWS_SECRET_ACCESS_KEY",
    "client_secret",
    "token",
    "hf_token",
    "githubToken",
    "access_token",
    "credentials",
    "auth",
    "bearer",
    "ssh_key",
    "api_keys",
    "sentry_dsn",
]
PLAIN_KEYS = [
    "learning_rate",
    "tokenizer",
    "max_tokens",
    "pad_token",
    "eos_token",
    "session_length",
    "num_sessions",
    "key_dim",
    "monkey",
    "author",
    "sort_keys",
    "batch_size",
]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_keys_that_name_a_secret_are_recognised(key: str) -> None:
    assert is_secret_name(key)


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_hyperparameters_that_only_look_alike_stay_visible(key: str) -> None:
    assert not is_secret_name(key)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("https://user:pass@host/x", "https://user:***@host/x"),
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://u:p@ss@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("https://h/api?token=abc&page=2", "https://h/api?token=***&page=2"),
        ("--api-key=abc", "--api-key=***"),
        ("https://host:8080/a@b", "https://host:8080/a@b"),  # no user info: nothing to hide
        ("alice@example.com", "alice@example.com"),
        ("lr=3e-4", "lr=3e-4"),
    ],
)
def test_credentials_inside_strings_are_masked(text: str, masked: str) -> None:
    assert mask_text(text) == masked


def test_secrets_in_lists_tuples_and_nested_dicts_are_masked() -> None:
    config = {
        "servers": [{"host": "a", "password": "p1"}, ({"token": "t1"},)],
        "headers": {"Authorization": "Bearer xyz", "Accept": "json"},
        "argv": ["train.py", "--password", "p2", "--lr", "0.1", "--token=t2"],
        "db": "postgres://me:p3@db/x",
        "use_auth_token": True,  # a flag, not a secret
        "api_key": None,
    }
    assert mask_secrets(config) == {
        "servers": [{"host": "a", "password": MASK}, [{"token": MASK}]],
        "headers": {"Authorization": MASK, "Accept": "json"},
        "argv": ["train.py", "--password", MASK, "--lr", "0.1", "--token=***"],
        "db": "postgres://me:***@db/x",
        "use_auth_token": True,
        "api_key": None,
    }


def test_context_values_under_secret_keys_are_masked() -> None:
    ctx = to_context({"subset": "val", "session": "abc123", "source": "https://u:pw@h/x"})
    assert dict(mask_context(ctx)) == {"subset": "val", "session": MASK, "source": "https://u:***@h/x"}


_SECRET = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=12, max_size=20).map(lambda s: "Zq" + s)
_PLAIN_VALUE = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False), st.sampled_from(["x", "val", "a b"]))


@st.composite
def _configs_with_secrets(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A config with secrets hidden at random depths and positions, and the secrets."""
    secrets: list[str] = []

    def secret_leaf() -> Any:
        secret = draw(_SECRET)
        secrets.append(secret)
        kind = draw(st.sampled_from(["keyed", "url", "query", "flag"]))
        if kind == "url":
            return "url", f"https://user:{secret}@host.example/path"
        if kind == "query":
            return "q", f"https://host.example/x?{draw(st.sampled_from(SECRET_KEYS))}={secret}&n=1"
        if kind == "flag":
            return "argv", ["run.py", f"--{draw(st.sampled_from(['password', 'api-key', 'token']))}", secret]
        return draw(st.sampled_from(SECRET_KEYS)), secret

    def node(depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {draw(st.sampled_from(PLAIN_KEYS)): draw(_PLAIN_VALUE)}
        key, value = secret_leaf()
        out[key] = value
        if depth < 3:
            shape = draw(st.sampled_from(["dict", "list", "tuple", "none"]))
            if shape == "dict":
                out["nested"] = node(depth + 1)
            elif shape in ("list", "tuple"):
                items = [node(depth + 1), draw(_PLAIN_VALUE)]
                out["items"] = tuple(items) if shape == "tuple" else items
        return out

    return node(0), secrets


@settings(max_examples=200, deadline=None)
@given(_configs_with_secrets())
def test_no_secret_survives_masking_at_any_depth(case: tuple[Any, list[str]]) -> None:
    config, secrets = case
    shown = json.dumps(mask_secrets(ExperimentRun(id="r", experiment_name="x", config=config).config))
    assert [s for s in secrets if s in shown] == []


@pytest.mark.usefixtures("use_memory")
@pytest.mark.parametrize("name", [" ", "   ", "\u3000", " \u00a0 "])
def test_a_blank_experiment_name_is_refused(name: str) -> None:
    with pytest.raises(InvalidNameError, match=r"blank|printable"):
        mltrack.start_run(name)


@pytest.mark.usefixtures("use_memory")
def test_a_name_with_spaces_around_it_is_fine() -> None:
    with mltrack.start_run(" my run ") as run:
        pass
    assert experiment_repository().get_experiment_sync(run.id).experiment_name == " my run "


def test_artifact_names_are_measured_in_file_system_bytes() -> None:
    fits = "é" * (MAX_ARTIFACT_PART_BYTES // 2)  # 254 bytes
    assert check_artifact_name(fits) == fits
    assert check_artifact_name(f"{fits}/{fits}") == f"{fits}/{fits}"  # each folder is its own file name
    with pytest.raises(InvalidNameError, match="400 bytes"):
        check_artifact_name("é" * 200)  # 200 characters: short as text, too long as a file
    with pytest.raises(InvalidNameError, match="bytes"):
        check_artifact_name("models/" + "€" * 90)  # 270 bytes in the last part


@pytest.mark.parametrize(
    ("code", "status", "kept"),
    [
        (None, "completed", None),
        (0, "completed", None),
        (False, "completed", None),
        (3, "failed", 3),
        (True, "failed", 1),
        ("fatal: no data", "failed", 1),
        (-1, "failed", -1),
    ],
)
def test_exit_codes_map_to_statuses_as_a_shell_reads_them(
    code: object, status: str, kept: int | None
) -> None:
    got_status, got_code = exit_status(code)
    assert (got_status.value, got_code) == (status, kept)


@pytest.mark.usefixtures("use_memory")
def test_live_state_is_masked_before_observers_see_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``set_state`` values go to observers (published live by mltrack-redis): masked as configs are."""
    from mltrack.factory import tracking_session

    session = tracking_session()
    handed: list[dict[str, Any]] = []
    submit = session.writer.submit

    def spy(hook: str, **kwargs: Any) -> None:
        if hook == "mltrack_set_state":
            handed.append(kwargs["values"])
        submit(hook, **kwargs)

    monkeypatch.setattr(session.writer, "submit", spy)
    with mltrack.start_run("live") as run:
        run.set_state(phase="eval", source="https://u:pw123@h.example/x", token="t0k")
    assert handed == [{"phase": "eval", "source": "https://u:***@h.example/x", "token": MASK}]
