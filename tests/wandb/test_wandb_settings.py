"""Where the W&B backend writes and whether it uploads: options first, then the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from mltrack.config import BackendConfig
from mltrack.errors import ConfigurationError
from mltrack_wandb.settings import WandbSettings


def _settings(**options: object) -> WandbSettings:
    storage = options.pop("storage_path", None)
    return WandbSettings.from_config(BackendConfig("wandb", storage_path=storage, options=options))  # type: ignore[arg-type]


def test_defaults_are_offline_under_wandb_logs_with_the_documented_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("WANDB_MODE", "MLTRACK_WANDB_TIMEOUT", "ML_STORAGE_PATH"):
        monkeypatch.delenv(name, raising=False)
    settings = _settings()
    assert settings.store.path == tmp_path / "wandb_logs"
    assert not settings.online
    assert settings.timeout == 30.0


def test_options_win_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("MLTRACK_WANDB_TIMEOUT", "7")
    from_env = _settings(storage_path=str(tmp_path / "env"))
    assert from_env.online and from_env.timeout == 7.0 and from_env.store.path == tmp_path / "env"
    given = _settings(
        storage_path=str(tmp_path / "env"), root=str(tmp_path / "opt"), mode="offline", timeout=1.5
    )
    assert not given.online and given.timeout == 1.5 and given.store.path == tmp_path / "opt"
    assert "root option" in given.store.setting


@pytest.mark.parametrize(
    ("mode", "online"), [("run", True), ("shared", True), ("dryrun", False), ("OFFLINE", False)]
)
def test_wandb_spellings_of_the_mode_are_understood(
    monkeypatch: pytest.MonkeyPatch, mode: str, online: bool
) -> None:
    monkeypatch.setenv("WANDB_MODE", mode)
    assert _settings().online is online


def test_an_unknown_mode_is_an_error_naming_the_setting_and_the_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_MODE", "onlin")
    with pytest.raises(
        ConfigurationError, match=r"^WANDB_MODE='onlin' is not a W&B mode: use offline .* or online"
    ):
        _settings()
    with pytest.raises(ConfigurationError, match=r"^the mode option='cloud'"):
        _settings(mode="cloud")
