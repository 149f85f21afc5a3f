"""mltrack.authoring: the helpers a backend author builds on, tested as an author uses them."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest

import mltrack
from mltrack import hookimpl
from mltrack.authoring import (
    SeriesBuilder,
    StoreDirectory,
    WriterRecord,
    artifact_path,
    check_artifact_name,
    health_status,
    plain_detail_keys,
    run_status,
)
from mltrack.config import BackendConfig, TrackingConfig
from mltrack.errors import ArtifactError, BackendError, InvalidNameError, StoreNotFoundError
from mltrack.factory import health_sync
from mltrack.models import ArtifactType, ExperimentStatus, HealthStatus
from mltrack.plugins import get_plugin_host

# --- storage path -----------------------------------------------------------------------------


def test_the_backends_own_option_wins_then_the_storage_path_then_the_default(tmp_path: Path) -> None:
    config = BackendConfig("mystore", storage_path=str(tmp_path / "shared"))
    own = StoreDirectory.resolve(config, "./default", option=str(tmp_path / "own"), option_name="root")
    assert (own.path, own.setting) == (tmp_path / "own", "the root option")
    shared = StoreDirectory.resolve(config, "./default", option=None, option_name="root")
    assert shared.path == tmp_path / "shared"
    default = StoreDirectory.resolve(BackendConfig("mystore"), "./mystore_logs")
    assert default.path == Path.cwd() / "mystore_logs"
    assert default.setting == "the default: set ML_STORAGE_PATH to choose another"


def test_ml_storage_path_is_named_when_the_environment_chose_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ML_STORAGE_PATH", str(tmp_path))
    config = TrackingConfig.from_env().backend_config("mystore")
    assert StoreDirectory.resolve(config, "./x").setting == "ML_STORAGE_PATH"


def test_a_writer_creates_the_folder_and_a_reader_is_told_it_is_missing(tmp_path: Path) -> None:
    where = tmp_path / "a" / "b"
    reader = StoreDirectory.resolve(BackendConfig("s", storage_path=str(where), must_exist=True), "./x")
    with pytest.raises(StoreNotFoundError, match=rf"no store at {where} \(the storage_path option"):
        reader.open()
    assert not where.exists()
    writer = StoreDirectory.resolve(BackendConfig("s", storage_path=str(where)), "./x")
    assert writer.open() == where and where.is_dir()
    assert reader.open() == where


def test_a_folder_that_cannot_be_made_is_a_backend_error_naming_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = StoreDirectory.resolve(
        BackendConfig("s"), "./x", option=str(blocker / "store"), option_name="root"
    )
    with pytest.raises(BackendError, match="the root option"):
        store.open()
    with pytest.raises(BackendError, match=r"not writable.*choose another folder with the root option"):
        store.preflight()
    assert "is a file, not a folder" in StoreDirectory(blocker, "ML_STORAGE_PATH").problems()[0]


def test_the_folders_health_has_plain_keys(tmp_path: Path) -> None:
    status = StoreDirectory(tmp_path, "ML_STORAGE_PATH").health("mystore", runs=3)
    assert status.is_healthy and status.backend == "mystore"
    assert status.details["root"] == str(tmp_path) and status.details["runs"] == 3
    assert status.details["writable"] is True and status.details["free_bytes"] > 0


# --- artifact names ---------------------------------------------------------------------------

GOOD_NAMES = ["model.zip", "models/best_model.zip", "损失 curve.png", "a\\b.txt", "x" * 255, "v1.2/..hidden"]
BAD_NAMES = {
    "": InvalidNameError,
    "x" * 256: InvalidNameError,
    "line\nbreak": InvalidNameError,
    "/etc/passwd": ArtifactError,
    "\\share\\x": ArtifactError,
    "../outside": ArtifactError,
    "a/../../b": ArtifactError,
    "a//b": ArtifactError,
    "./a": ArtifactError,
    "dir/": ArtifactError,
    "C:/x": ArtifactError,
    "s3://bucket/x": ArtifactError,
}


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_valid_artifact_names_pass_unchanged(name: str) -> None:
    assert check_artifact_name(name) == name


@pytest.mark.parametrize(("name", "error"), BAD_NAMES.items())
def test_invalid_artifact_names_raise_with_the_fix(name: str, error: type[Exception]) -> None:
    with pytest.raises(error, match="artifact name"):
        check_artifact_name(name)


def test_log_artifact_applies_the_same_rule(tmp_path: Path, use_memory: None) -> None:
    """The helper and ``log_artifact`` agree, so a backend never sees a name the rule refuses."""
    source = tmp_path / "f.bin"
    source.write_bytes(b"x")
    with mltrack.start_run("names") as run:
        for name in GOOD_NAMES:
            assert run.log_artifact(source, ArtifactType.OTHER, name=name).name == name
        for name, error in BAD_NAMES.items():
            with pytest.raises(error):
                run.log_artifact(source, name=name)


def test_artifact_path_stays_inside_the_folder(tmp_path: Path) -> None:
    assert artifact_path(tmp_path, "models/best.zip") == tmp_path / "models" / "best.zip"
    assert artifact_path(tmp_path, "a\\b.txt") == tmp_path / "a" / "b.txt"
    with pytest.raises(ArtifactError):
        artifact_path(tmp_path, "../escape")


# --- metric histories -------------------------------------------------------------------------


def test_series_are_sorted_by_step_the_later_point_wins_and_contexts_stay_apart() -> None:
    builder = SeriesBuilder()
    builder.add("loss", {}, [5, 1, 5], [1.0, 2.0, 3.0], [10.0, 11.0, 12.0])
    builder.add("loss", {"subset": "val"}, [0], [9.0], [13.0])
    builder.add("loss", {}, [3, 1], [4.0, 5.0], [14.0, 15.0])
    train, val = builder.series()
    assert (train.name, dict(train.context), list(train.steps)) == ("loss", {}, [1, 3, 5])
    assert list(train.values) == [5.0, 4.0, 3.0] and list(train.timestamps or []) == [15.0, 14.0, 12.0]
    assert dict(val.context) == {"subset": "val"} and list(val.values) == [9.0]


def test_series_keep_only_the_names_asked_for() -> None:
    builder = SeriesBuilder(["reward"])
    builder.add("loss", {}, [0], [1.0], [0.0])
    builder.add("reward", {}, [0], [2.0], [0.0])
    assert [s.name for s in builder.series()] == ["reward"]
    assert SeriesBuilder([]).series() == []


# --- crash detection --------------------------------------------------------------------------


def test_this_process_is_a_live_writer_and_its_record_round_trips() -> None:
    me = WriterRecord.current()
    assert not me.is_gone()
    assert WriterRecord.from_json(me.to_json()) == me
    assert WriterRecord.from_json(None) is None
    assert WriterRecord.from_json({"pid": "not a number"}) is None


def test_a_writer_that_exited_is_gone() -> None:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    record = WriterRecord(WriterRecord.current().host, int(child.stdout))
    assert record.is_gone()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_a_reused_pid_is_not_taken_for_the_writer() -> None:
    me = WriterRecord.current()
    assert me.started
    assert WriterRecord(me.host, me.pid, str(int(me.started) - 1)).is_gone()


def test_a_writer_on_another_machine_is_never_declared_dead() -> None:
    assert WriterRecord("some-other-host.invalid", 999_999_999).state() == "unknown"
    assert not WriterRecord("some-other-host.invalid", 999_999_999).is_gone()
    here = WriterRecord.current().host
    assert WriterRecord.from_json({"host": here, "pid": 999_999_999}) == WriterRecord(here, 999_999_999)


def test_a_writer_in_another_pid_namespace_is_judged_by_that_namespace_not_by_our_pids() -> None:
    me = WriterRecord.current()
    # pid 1 is alive here, but the record says pid 1 of a namespace no process is in: gone, seen
    # from the first namespace (which sees them all), unknown from inside a container.
    record = WriterRecord(me.host, 1, "", "pid:[1]")
    assert record.state() == ("dead" if me.pid_namespace == "pid:[4026531836]" else "unknown")
    # tests/reliability/test_rel_containers.py checks a live and a killed writer in a real namespace.


def test_only_a_running_run_with_a_gone_writer_reads_crashed() -> None:
    gone = WriterRecord(WriterRecord.current().host, 999_999_999)
    assert run_status(ExperimentStatus.RUNNING, gone) is ExperimentStatus.CRASHED
    assert run_status(ExperimentStatus.COMPLETED, gone) is ExperimentStatus.COMPLETED
    assert run_status(ExperimentStatus.RUNNING, WriterRecord.current()) is ExperimentStatus.RUNNING
    assert run_status(ExperimentStatus.RUNNING, None) is ExperimentStatus.RUNNING


# --- health detail keys -----------------------------------------------------------------------


def test_health_status_is_healthy_without_issues_and_keeps_keys_plain() -> None:
    assert health_status("s", root="/x") == HealthStatus(True, (), backend="s", details={"root": "/x"})
    status = health_status("s", ["disk full: free space"], **{"s.root": "/x"})
    assert not status.is_healthy and status.details == {"root": "/x"}
    assert plain_detail_keys("s", {"s": {"root": "/x"}, "s3.bucket": "b"}) == {"root": "/x", "s3.bucket": "b"}


class _SelfNamingBackend:
    """Names itself in its issues and detail keys, as authors did before the rule was written down."""

    def __init__(self, config: BackendConfig) -> None:
        pass

    @hookimpl
    def mltrack_health(self) -> HealthStatus:
        return HealthStatus(
            False, ("selfnamed: disk full",), backend="selfnamed", details={"selfnamed.root": "/x"}
        )


@pytest.mark.filterwarnings("ignore:mltrack. backend 'selfnamed'")  # it implements health only
def test_health_check_names_each_backend_once() -> None:
    plugin = types.ModuleType("selfnamed_plugin")

    @hookimpl
    def mltrack_register_backends(register: mltrack.RegisterBackend) -> None:
        register("selfnamed", _SelfNamingBackend)

    mltrack_register_backends.__module__ = plugin.__name__
    plugin.mltrack_register_backends = mltrack_register_backends  # type: ignore[attr-defined]
    get_plugin_host().register(plugin, name="selfnamed_plugin")
    status = health_sync(TrackingConfig(backends=("selfnamed",)))
    assert status.details["backends"]["selfnamed"] == {"is_healthy": False, "root": "/x"}
    assert "selfnamed: disk full" in status.issues


# --- exports ----------------------------------------------------------------------------------


def test_every_lazy_export_is_an_explicit_re_export_for_type_checkers() -> None:
    """``from mltrack import X`` passes ``mypy --strict`` only if the TYPE_CHECKING block says ``X as X``."""
    source = Path(mltrack.__file__).read_text()
    block = next(
        n for n in ast.parse(source).body if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
    )
    explicit = {
        a.name for n in block.body if isinstance(n, ast.ImportFrom) for a in n.names if a.asname == a.name
    }
    assert sorted(set(mltrack.__all__) - explicit) == []
    assert "RegisterBackend" in mltrack.__all__


def test_a_writer_record_round_trips_through_its_one_line_form_and_reads_the_older_form() -> None:
    me = WriterRecord.current()
    assert WriterRecord.from_text(me.to_text()) == me
    assert WriterRecord.from_text("host 42 1234") == WriterRecord("host", 42, "1234")  # before namespaces
    assert WriterRecord.from_text("host 42") == WriterRecord("host", 42)
    assert WriterRecord.from_text("") is None
    assert WriterRecord.from_text("host not-a-pid") is None
