"""One table of environment variables: every one read is listed, parsed one way, and documented alike."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mltrack.config import TrackingConfig
from mltrack.errors import ConfigurationError
from mltrack.settings import SETTINGS, env

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted(ROOT.glob("packages/*/src/**/*.py"))
TABLE = {s.name: s for s in SETTINGS}


DIRECT_READ = re.compile(
    r"""(?:os\.environ\.get|os\.getenv|os\.environ\[|environ\.get)\(?\s*["']([A-Z0-9_]+)["']"""
)


def _readme_table() -> dict[str, str]:
    """The README's Configuration table: variable -> default cell."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([A-Z0-9_]+)` \|(.*)\| (.*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(3).strip()
    return rows


def test_every_mltrack_variable_named_in_the_sources_is_in_the_table() -> None:
    named: dict[str, set[str]] = {}
    for path in SOURCES:
        for name in re.findall(r"""["'`](?:MLTRACK|ML)_[A-Z0-9_]+""", path.read_text()):
            named.setdefault(name[1:], set()).add(str(path.relative_to(ROOT)))
    missing = {n: sorted(p) for n, p in named.items() if n not in TABLE}
    assert not missing, f"add these to mltrack.settings.SETTINGS and the README: {missing}"


def test_every_environment_read_goes_through_the_table() -> None:
    direct: dict[str, set[str]] = {}
    for path in SOURCES:
        rel = str(path.relative_to(ROOT))
        if rel.endswith("mltrack/settings.py"):
            continue
        for name in DIRECT_READ.findall(path.read_text()):
            direct.setdefault(rel, set()).add(name)
    assert direct == {}, "read environment variables with mltrack.settings.env(NAME)"


def test_the_readme_table_lists_the_same_variables_with_the_same_defaults() -> None:
    readme = _readme_table()
    assert list(readme) == list(TABLE), (
        "the README's Configuration table and mltrack.settings.SETTINGS differ"
    )
    differing = {n: (readme[n], TABLE[n].shown_default) for n in TABLE if readme[n] != TABLE[n].shown_default}
    assert not differing, f"README default vs settings table: {differing}"


def test_the_defaults_are_the_ones_tracking_config_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TABLE:
        monkeypatch.delenv(name, raising=False)
    config = TrackingConfig.from_env()
    assert config == TrackingConfig()
    assert env("MLTRACK_HANDLE_SIGTERM") is True


@pytest.mark.parametrize("word", ["1", "true", "TRUE", "Yes", "on", " On "])
def test_booleans_accept_the_usual_words_for_on(monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    monkeypatch.setenv("MLTRACK_KEEP_SECRETS", word)
    assert env("MLTRACK_KEEP_SECRETS") is True


@pytest.mark.parametrize("word", ["0", "false", "False", "NO", "off"])
def test_booleans_accept_the_usual_words_for_off(monkeypatch: pytest.MonkeyPatch, word: str) -> None:
    monkeypatch.setenv("MLTRACK_HANDLE_SIGTERM", word)
    assert env("MLTRACK_HANDLE_SIGTERM") is False


def test_a_bad_boolean_names_the_variable_and_the_accepted_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRACK_STRICT", "maybe")
    with pytest.raises(ConfigurationError) as err:
        TrackingConfig.from_env()
    assert str(err.value) == (
        "MLTRACK_STRICT='maybe': 'maybe' is not a boolean: use one of 1/true/yes/on/0/false/no/off (any case)"
    )


def test_handle_sigterm_understands_false_not_only_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from mltrack import factory

    monkeypatch.setenv("MLTRACK_HANDLE_SIGTERM", "false")
    before = signal.getsignal(signal.SIGTERM)
    factory._handle_sigterm()
    assert signal.getsignal(signal.SIGTERM) is before


def test_numbers_and_choices_are_checked_with_the_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLTRACK_FLUSH_INTERVAL", "fast")
    with pytest.raises(ConfigurationError, match=r"^MLTRACK_FLUSH_INTERVAL='fast': 'fast' is not a number"):
        TrackingConfig.from_env()
    monkeypatch.setenv("MLTRACK_FLUSH_INTERVAL", "0.5")
    monkeypatch.setenv("MLTRACK_WRITER", "threads")
    with pytest.raises(
        ConfigurationError, match=r"^MLTRACK_WRITER='threads': use one of thread, process, auto"
    ):
        TrackingConfig.from_env()


def test_an_empty_allow_list_is_none_and_an_unset_one_is_all(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env("MLTRACK_LOAD_PLUGINS") is None
    monkeypatch.setenv("MLTRACK_LOAD_PLUGINS", "")
    assert env("MLTRACK_LOAD_PLUGINS") == ()
    monkeypatch.setenv("MLTRACK_LOAD_PLUGINS", " aim, mlflow ,")
    assert env("MLTRACK_LOAD_PLUGINS") == ("aim", "mlflow")
