"""An output format for SB3's logger that tracks every numeric value it dumps through mltrack.

``TrackingCallback`` adds one to the model's logger for you. Use it on its own when you
configure SB3's logger yourself::

    from stable_baselines3.common.logger import configure
    from mltrack_sb3 import MLTrackOutputFormat

    logger = configure("./sb3_logs", ["stdout", "csv"])
    logger.output_formats.append(MLTrackOutputFormat(experiment_name="PPO_CartPole"))
    model.set_logger(logger)
    model.learn(10_000)
    logger.close()  # finishes the run the output format started

Values are tracked at ``step`` = the step SB3 dumps at (``num_timesteps`` during ``learn``).
Keys of any shape are accepted (``loss``, ``train/loss``, ``a/b/c``); values that are not
numbers (text, images, videos, figures) are skipped, ``HParam`` becomes run parameters, and
keys recorded with ``exclude="mltrack"`` are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stable_baselines3.common.logger import HParam, KVWriter

from mltrack.errors import ValidationError
from mltrack.models import ExperimentStatus, to_metric_value, validate_name
from mltrack.tracker import ActiveRun
from mltrack_sb3._failures import FailureReporter

__all__ = ["OUTPUT_NAME", "MLTrackOutputFormat"]

OUTPUT_NAME = "mltrack"
"""The name to exclude a key from tracking: ``logger.record(key, value, exclude="mltrack")``."""

_PLAIN_NUMBERS = (int, float)


class MLTrackOutputFormat(KVWriter):
    """Track the values SB3's logger dumps as mltrack metrics of one run.

    Pass ``run`` (from ``mltrack.start_run``) to track into a run you manage; without it the
    output format starts a run of ``experiment_name`` with ``config`` at the first dump and
    finishes it (COMPLETED) when the logger is closed. ``log_interval=n`` tracks every n-th
    dump only. Tracking failures never raise: they are warned about once and counted.
    """

    def __init__(
        self,
        run: ActiveRun | None = None,
        *,
        experiment_name: str | None = None,
        config: Mapping[str, Any] | None = None,
        log_interval: int = 1,
        reporter: FailureReporter | None = None,
    ) -> None:
        if log_interval < 1:
            raise ValueError(f"log_interval must be >= 1, got {log_interval}")
        self.run = run
        self._owns_run = run is None
        self._experiment_name = experiment_name
        self._config = dict(config or {})
        self._log_interval = log_interval
        self._dumps = 0
        self._reporter = reporter or FailureReporter("MLTrackOutputFormat")
        # Key -> whether mltrack accepts it as a metric name; checked once per key, since
        # SB3 dumps the same few keys thousands of times.
        self._names: dict[str, bool] = {}

    @property
    def failures(self) -> int:
        """How many tracking calls of this output format failed."""
        return self._reporter.failures

    def _active_run(self) -> ActiveRun | None:
        if self.run is None and self._owns_run:
            from mltrack.factory import start_run

            try:
                self.run = start_run(self._experiment_name, self._config)
            except Exception as exc:
                self._owns_run = False  # do not retry (and warn) at every dump
                self._reporter.report("starting the run", exc)
        return self.run

    def _accepts(self, key: str) -> bool:
        ok = self._names.get(key)
        if ok is None:
            try:
                validate_name(key, "metric name")
                ok = True
            except ValidationError as exc:
                ok = False
                self._reporter.report(f"tracking SB3 key {key!r:.60}", exc)
            self._names[key] = ok
        return ok

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
    ) -> None:
        """Track the numeric values of one dump at ``step`` (called by SB3's ``Logger.dump``)."""
        self._dumps += 1
        if (self._dumps - 1) % self._log_interval:
            return
        run = self._active_run()
        if run is None:
            return
        metrics: dict[str, float] = {}
        for key, value in key_values.items():
            excluded = key_excluded.get(key)
            if excluded and OUTPUT_NAME in excluded:
                continue
            if not self._accepts(key):
                continue
            if type(value) in _PLAIN_NUMBERS:
                metrics[key] = value
                continue
            if isinstance(value, HParam):
                self._log_hparams(run, value)
                continue
            try:
                metrics[key] = to_metric_value(key, value)
            except (ValidationError, TypeError, ValueError):
                pass  # text, images, videos, figures, arrays: not metrics
        if not metrics:
            return
        try:
            run.log_metrics(metrics, step=step)
        except Exception as exc:
            self._reporter.report("tracking SB3 logger values", exc)

    def _log_hparams(self, run: ActiveRun, value: HParam) -> None:
        try:
            run.log_params(value.hparam_dict)
        except Exception as exc:
            self._reporter.report("tracking SB3 HParam values", exc)

    def close(self) -> None:
        """Finish the run if this output format started it (SB3's ``Logger.close`` calls this)."""
        if self._owns_run and self.run is not None:
            run, self.run = self.run, None
            try:
                run.finish(ExperimentStatus.COMPLETED)
            except Exception as exc:
                self._reporter.report("finishing the run", exc)
