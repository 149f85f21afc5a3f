"""Case 6, bad input: the public API fuzzed with hypothesis, on the memory backend and on Aim.

Every input gets the conversion the README documents or a typed error (``mltrack.errors``)
naming what was wrong, and the store stays consistent: what was accepted reads back exactly,
the run finishes, the repository lists it. Complements tests/core/test_models.py (unit
conversions) by going through the whole API into a real store.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mltrack
from mltrack import (
    ArtifactError,
    ExperimentStatus,
    InvalidMetricError,
    InvalidNameError,
    InvalidStepError,
    MLTrackError,
    RunNotFoundError,
    RunStateError,
    ValidationError,
)

from _reliability import record, repetitions

CI_EXAMPLES = repetitions("MLTRACK_RELIABILITY_EXAMPLES", 150)
FULL_EXAMPLES = 1500
CI_RUN_EXAMPLES = repetitions("MLTRACK_RELIABILITY_RUN_EXAMPLES", 15)
FULL_RUN_EXAMPLES = 150
INVALID = object()
from mltrack.models import MAX_STEP  # noqa: E402


def _configure(backend: str, root: Path) -> None:
    if backend == "memory":
        mltrack.configure_backend("memory", store=str(root))
    else:
        from mltrack_aim import configure_aim_backend

        configure_aim_backend(repo_path=root)


@pytest.fixture(params=["memory", "aim"])
def store(request: pytest.FixtureRequest, tmp_path: Path, repo_template: Path) -> str:
    """The API configured on a fresh memory store or a fresh Aim repository."""
    import shutil

    if request.param == "aim":
        shutil.copytree(repo_template, tmp_path / "aim")
        _configure("aim", tmp_path / "aim")
    else:
        _configure("memory", tmp_path / "memory")
    return str(request.param)


# CI explores the same examples every run (a red CI names a change, not luck); the full suite
# (nox -s reliability sets MLTRACK_RELIABILITY_RANDOM=1) explores new ones each time.
RANDOM = os.environ.get("MLTRACK_RELIABILITY_RANDOM", "0") == "1"


def _fuzz(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- metric values ----------------------------------------------------------------------

NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**1100), max_value=2**1100),
    st.booleans(),
)
NUMPY = st.one_of(
    st.builds(np.float32, st.floats(width=32)),
    st.builds(np.float64, st.floats()),
    st.builds(np.float16, st.floats(width=16)),
    st.builds(np.int64, st.integers(-(2**63), 2**63 - 1)),
    st.builds(np.int8, st.integers(-128, 127)),
    st.builds(np.bool_, st.booleans()),
    st.builds(lambda x: np.array(x), st.floats()),  # 0-d array
    st.builds(lambda x: np.array([x]), st.floats()),  # one value
    st.builds(lambda x, n: np.full(n, x), st.floats(), st.integers(2, 5)),  # several: refused
    st.builds(np.complex128, st.complex_numbers()),
)
NOT_NUMBERS = st.one_of(
    st.none(),
    st.text(max_size=10),
    st.binary(max_size=5),
    st.lists(st.floats(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=2),
    st.complex_numbers(),
    st.builds(Decimal, st.integers()),
    st.builds(Fraction, st.integers(), st.integers(1, 9)),
)


def _expected_value(value: object) -> object:
    """What the README says a metric value becomes: a float, or INVALID (InvalidMetricError)."""
    if isinstance(value, (bool, int, float)):
        try:
            return float(value)
        except OverflowError:
            return INVALID
    if isinstance(value, np.ndarray):
        return float(value.reshape(-1)[0]) if value.size == 1 and value.ndim <= 1 else INVALID
    if isinstance(value, np.generic):
        inner = value.item()
        return float(inner) if isinstance(inner, (bool, int, float)) else INVALID
    return INVALID


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _fuzz_metric_values(examples: int) -> None:
    run = mltrack.start_run("fuzz-values")
    accepted: list[float] = []

    @_fuzz(examples)
    @given(value=st.one_of(NUMBERS, NUMPY, NOT_NUMBERS))
    def check(value: object) -> None:
        expected = _expected_value(value)
        if expected is INVALID:
            with pytest.raises(InvalidMetricError, match="metric 'm'"):
                run.log_metric("m", value, step=len(accepted))
        else:
            run.log_metric("m", value, step=len(accepted))
            accepted.append(float(expected))  # type: ignore[arg-type]

    check()
    run.finish()
    series = mltrack.factory.experiment_repository().get_experiment_metrics_sync(run.id).series("m")
    stored = [float(v) for v in series.values]
    record("bad-input-values", accepted=len(accepted), read=len(stored))
    assert len(stored) == len(accepted)
    assert all(_same(a, b) for a, b in zip(stored, accepted))


def test_metric_values_are_floats_or_a_typed_error(store: str) -> None:
    """NaN, inf, huge ints, NumPy scalars, strings, None...: stored as float or InvalidMetricError."""
    _fuzz_metric_values(CI_EXAMPLES)


# --- names ------------------------------------------------------------------------------


def _name_ok(name: object) -> bool:
    return type(name) is str and 0 < len(name) <= 255 and name.isprintable() and not name.isspace()


NAMES = st.one_of(st.text(max_size=300), st.text(min_size=250, max_size=260), st.integers(), st.none())


def _fuzz_names(examples: int) -> None:
    run = mltrack.start_run("fuzz-names")
    accepted: set[str] = set()

    @_fuzz(examples)
    @given(name=NAMES, tag=NAMES)
    def check(name: object, tag: object) -> None:
        if _name_ok(name):
            run.log_metric(name, 1.0, step=0)  # type: ignore[arg-type]
            accepted.add(name)  # type: ignore[arg-type]
        else:
            with pytest.raises(InvalidNameError, match="metric name"):
                run.log_metric(name, 1.0, step=0)  # type: ignore[arg-type]
        if _name_ok(tag):
            run.set_tags([tag])  # type: ignore[list-item]
        else:
            with pytest.raises(InvalidNameError):
                run.set_tags([tag])  # type: ignore[list-item]

    check()
    run.finish()
    history = mltrack.factory.experiment_repository().get_experiment_metrics_sync(run.id)
    record("bad-input-names", accepted=len(accepted), read=len(history.names))
    assert set(history.names) == accepted


def test_metric_names_and_tags_are_kept_or_a_typed_error(store: str) -> None:
    """Empty, too long, unprintable or non-str names and tags: InvalidNameError; the rest stored as given."""
    _fuzz_names(CI_EXAMPLES)


# --- steps ------------------------------------------------------------------------------

STEPS = st.one_of(
    st.integers(min_value=-(2**40), max_value=10**6),
    st.integers(min_value=0, max_value=2**53),
    st.floats(max_value=1e15),
    st.floats(min_value=0, max_value=1e6).map(float.__floor__).map(float),
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.builds(np.int64, st.integers(0, 10**6)),
)


def _expected_step(step: object, auto: int) -> object:
    if step is None:
        return auto
    if isinstance(step, bool):
        return INVALID
    if isinstance(step, np.integer):
        step = int(step)
    if isinstance(step, float) and step.is_integer() and step >= 0:
        step = int(step)
    if type(step) is int and 0 <= step <= MAX_STEP:
        return step
    return INVALID


def _fuzz_steps(examples: int) -> None:
    run = mltrack.start_run("fuzz-steps")
    model: dict[int, float] = {}
    highest = [-1]
    counter = [0]

    @_fuzz(examples)
    @given(step=STEPS)
    def check(step: object) -> None:
        counter[0] += 1
        value = float(counter[0])
        expected = _expected_step(step, highest[0] + 1)
        if expected is INVALID:
            with pytest.raises(InvalidStepError, match="step"):
                run.log_metric("m", value, step=step)
            return
        run.log_metric("m", value, step=step)
        model[expected] = value  # type: ignore[index]  # the same step again: the last value wins
        highest[0] = max(highest[0], expected)  # type: ignore[call-overload]

    check()
    run.finish()
    series = mltrack.factory.experiment_repository().get_experiment_metrics_sync(run.id).series("m")
    steps = [int(s) for s in series.steps]
    values = [float(v) for v in series.values]
    record("bad-input-steps", accepted_steps=len(model), read=len(steps))
    assert steps == sorted(model)  # read back sorted, each step once
    assert values == [model[s] for s in sorted(model)]


def test_steps_negative_fractional_backwards_and_repeated(store: str) -> None:
    """Bad steps raise InvalidStepError; backwards steps read back sorted; a repeated step keeps the last."""
    _fuzz_steps(CI_EXAMPLES)


def test_a_step_beyond_64_bits_is_a_typed_error_and_logging_goes_on(store: str) -> None:
    """step=2**63 raises InvalidStepError; the points around it are stored."""
    run = mltrack.start_run("huge-step")
    run.log_metric("m", 1.0, step=0)
    try:
        with pytest.raises(InvalidStepError):
            run.log_metric("m", 2.0, step=2**63)
    finally:
        run.log_metric("m", 3.0, step=1)
        ok = mltrack.factory.tracking_session().flush(timeout=10)
    assert ok
    run.finish()
    series = mltrack.factory.experiment_repository().get_experiment_metrics_sync(run.id).series("m")
    assert [int(s) for s in series.steps] == [0, 1]


def test_the_largest_step_reads_back_on_aim(aim_repo: Path) -> None:
    """Step 2**63-1, the largest a step can be, reads back unchanged from Aim."""
    from mltrack_aim import configure_aim_backend

    configure_aim_backend(repo_path=aim_repo)
    with mltrack.start_run("max-step") as run:
        run.log_metric("m", 1.0, step=0)
        run.log_metric("m", 2.0, step=MAX_STEP)
    series = mltrack.factory.experiment_repository().get_experiment_metrics_sync(run.id).series("m")
    assert [int(s) for s in series.steps] == [0, MAX_STEP]


# --- configs ----------------------------------------------------------------------------


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    INT64,
    st.floats(),
    st.text(max_size=20),
    st.builds(_Opaque),
    st.builds(Path, st.text(max_size=5)),
    st.builds(np.float32, st.floats(width=32)),
    st.builds(lambda n: np.arange(n), st.integers(0, 4)),
    st.frozensets(INT64, max_size=3),
)
CONFIGS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=8), inner, max_size=4),
    ),
    max_leaves=30,
)


def _config_key_ok(key: object) -> bool:
    return _name_ok(str(key))


def _fuzz_configs(examples: int) -> None:
    repo = mltrack.factory.experiment_repository()
    counts = {"runs": 0, "refused": 0}

    @_fuzz(examples)
    @given(config=st.dictionaries(st.text(max_size=300), CONFIGS, max_size=5), cyclic=st.booleans())
    def check(config: dict[Any, Any], cyclic: bool) -> None:
        if cyclic:
            loop: list[Any] = [1]
            loop.append(loop)
            config = {**config, "cycle": loop, "self": config}
        if not all(_config_key_ok(k) for k in config):
            with pytest.raises(InvalidNameError, match="config key"):
                mltrack.start_run("fuzz-config", config=config)
            counts["refused"] += 1
            return
        with mltrack.start_run("fuzz-config", config=config) as run:
            run.log_metric("m", 1.0, step=0)
        stored = repo.get_experiment_sync(run.id).config
        json.dumps(stored)  # plain JSON-like values only
        assert set(stored) == {str(k) for k in config}
        counts["runs"] += 1

    check()
    big = {f"k{i}": list(range(50)) for i in range(2000)}
    with mltrack.start_run("fuzz-config-large", config=big) as run:
        run.log_metric("m", 1.0, step=0)
    stored = repo.get_experiment_sync(run.id).config
    assert stored == big
    record("bad-input-configs", **counts, large_keys=len(stored))
    assert len(repo.list_experiments_sync(name="fuzz-config")) == counts["runs"]


def test_configs_nested_cyclic_odd_and_large_become_plain_values(store: str) -> None:
    """Nested, cyclic, non-JSON and very large configs are stored as plain values that read back."""
    _fuzz_configs(CI_RUN_EXAMPLES)


def test_a_config_int_beyond_64_bits_is_kept_on_aim(aim_repo: Path) -> None:
    """config={"seed": 2**64} is stored (as a number or a string) with the rest of the config."""
    from mltrack_aim import configure_aim_backend

    configure_aim_backend(repo_path=aim_repo)
    with mltrack.start_run("huge-int", config={"seed": 2**64, "lr": 0.1}) as run:
        run.log_metric("m", 1.0, step=0)
    config = mltrack.factory.experiment_repository().get_experiment_sync(run.id).config
    assert config.get("lr") == 0.1 and str(config.get("seed")) == str(2**64)


# --- statuses, run ids ------------------------------------------------------------------

STATUS_VALUES = [s.value for s in ExperimentStatus]


def test_valid_statuses_are_stored(store: str) -> None:
    """Every finished status, as the enum or its string, is stored and read back.

    (Finishing a run as RUNNING is accepted; Aim then reads it CRASHED, the memory store RUNNING.)
    """
    repo = mltrack.factory.experiment_repository()
    finished = [s for s in ExperimentStatus if s.is_finished]
    for status in [*finished, *(s.value for s in finished)]:
        run = mltrack.start_run("statuses")
        run.finish(status)
        assert repo.get_experiment_sync(run.id).status is ExperimentStatus(status)


def test_an_unknown_status_is_a_typed_error_and_the_run_stays_open(store: str) -> None:
    """finish('done') raises ValidationError listing the statuses; the run can still be finished."""

    @_fuzz(CI_RUN_EXAMPLES)
    @given(status=st.text(max_size=12).filter(lambda s: s not in STATUS_VALUES))
    def check(status: str) -> None:
        run = mltrack.start_run("bad-status")
        with pytest.raises(ValidationError, match="completed"):
            run.finish(status)
        run.finish()

    check()


@pytest.mark.parametrize("config", [[("lr", 0.1)], "lr=0.1", 3])
def test_a_config_that_is_not_a_mapping_is_a_typed_error(store: str, config: object) -> None:
    """start_run(config=[...]) raises ValidationError, not a bare TypeError."""
    with pytest.raises(ValidationError, match="config"):
        mltrack.start_run("bad-config", config=config)  # type: ignore[arg-type]


def test_unknown_and_malformed_run_ids_are_typed_errors(store: str) -> None:
    """Reading or logging to an unknown, malformed or ambiguous run id raises RunNotFoundError/RunStateError."""
    repo = mltrack.factory.experiment_repository()
    runs = []
    for _ in range(2):
        with mltrack.start_run("ids") as run:
            run.log_metric("m", 1.0)
        runs.append(run.id)
    session = mltrack.factory.tracking_session()

    @_fuzz(CI_EXAMPLES)
    @given(
        run_id=st.one_of(st.text(max_size=40), st.sampled_from(["../../etc/passwd", "/", "\x00", "*", "%"]))
    )
    def check(run_id: str) -> None:
        matches = [r for r in runs if r.startswith(run_id)]
        if len(matches) == 1:
            assert repo.get_experiment_sync(run_id).experiment_id == matches[0]
        else:
            with pytest.raises(RunNotFoundError):
                repo.get_experiment_sync(run_id)
            with pytest.raises(RunNotFoundError):
                repo.get_experiment_metrics_sync(run_id)
        with pytest.raises(RunStateError, match="not open"):
            session.log_metric(run_id, "m", 1.0)

    check()
    assert {s.experiment_id for s in repo.list_experiments_sync(name="ids")} == set(runs)


# --- artifact paths ---------------------------------------------------------------------


def test_artifact_paths_missing_directories_and_symlinks(store: str, tmp_path: Path) -> None:
    """Missing files, directories and dangling or directory symlinks raise ArtifactError; a file symlink stores the file."""
    real = tmp_path / "real.bin"
    real.write_bytes(b"model")
    (tmp_path / "adir").mkdir()
    os.symlink(real, tmp_path / "link.bin")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.bin")
    os.symlink(tmp_path / "adir", tmp_path / "dirlink")
    bad = ["missing.bin", "adir", "dangling.bin", "dirlink", ""]
    repo = mltrack.factory.experiment_repository()
    with mltrack.start_run("artifact-paths") as run:
        for name in bad:
            with pytest.raises(ArtifactError, match="artifact"):
                run.log_artifact(tmp_path / name if name else Path(""))
        stored = run.log_artifact(tmp_path / "link.bin", "model")
        relative = run.log_artifact(os.path.relpath(real), "model", name="relative.bin")
    assert stored.size == 5 and relative.size == 5
    names = sorted(a.name for a in repo.list_artifacts_sync(run.id))
    assert names == ["link.bin", "relative.bin"]
    for artifact in repo.list_artifacts_sync(run.id):
        if store == "aim":
            assert Path(artifact.file_path).read_bytes() == b"model"
    assert repo.get_experiment_sync(run.id).status is ExperimentStatus.COMPLETED


def test_errors_are_all_mltrack_errors() -> None:
    """Every error the fuzzers expect is an MLTrackError, so one except clause catches them all."""
    for cls in (
        InvalidMetricError,
        InvalidNameError,
        InvalidStepError,
        ArtifactError,
        RunNotFoundError,
        RunStateError,
    ):
        assert issubclass(cls, MLTrackError)


# --- the full versions --------------------------------------------------------------------


@pytest.mark.slow
def test_full_fuzz_of_values_names_steps_and_configs(store: str) -> None:
    """The fuzzers above with ten times the examples."""
    _fuzz_metric_values(FULL_EXAMPLES)
    _fuzz_names(FULL_EXAMPLES)
    _fuzz_steps(FULL_EXAMPLES)
    _fuzz_configs(FULL_RUN_EXAMPLES)
