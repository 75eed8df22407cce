"""The Trainer every backend drives: one ``train(trial=...)`` call per trial.

It turns a backend's trial into typed hyperparameters, routes each one to ``TrainingArguments`` or to
``model_init``, always ends with the evaluation metrics and objective, and turns a trial's failure
(an exception or a NaN objective) into ``TrialFailed`` so backends can record it and go on.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from hpsearch.errors import first_line, ConfigError, HPSearchError, TrialFailed
from hpsearch.model import ModelInit
from hpsearch.objective import Objectives
from hpsearch.results import TrialOutcome
from hpsearch.space import SearchSpace

LATENCY_REPEATS = 5
TRAINING_ARGUMENT_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainingArguments))


TrialListener = Callable[[Any, TrialOutcome], None]


def check_space_routing(space: SearchSpace, model_init: ModelInit) -> None:
    """Every parameter must land somewhere; transformers would only warn and drop it."""
    for name in space.names:
        if name not in TRAINING_ARGUMENT_FIELDS and name not in model_init.consumed:
            raise ConfigError(
                f"space.{name}: neither a TrainingArguments field nor an argument of model_init "
                f"({model_init.target.__module__}.{model_init.target.__qualname__}); rename it or remove it"
            )


class SearchTrainer(Trainer):
    def __init__(
        self,
        *,
        hpsearch_model_init: ModelInit,
        space: SearchSpace,
        objectives: Objectives,
        **kwargs: Any,
    ) -> None:
        self.hpsearch_model_init = hpsearch_model_init
        self.space = space
        self.objectives = objectives
        self._current_params: dict[str, Any] = {}
        super().__init__(model_init=self._init_model, compute_metrics=objectives.compute_metrics, **kwargs)
        self.compute_objective = objectives.compute_objective
        # Backends replace this: optuna turns a Trial into values; dict trials are cast by the space.
        self.assign: Callable[[Any], dict[str, Any]] = space.cast
        # Optional in-training reporter (Ray); None keeps transformers' own (optuna pruning).
        self.intermediate_reporter: Callable[[int, dict[str, float]], None] | None = None
        self.listeners: list[TrialListener] = []
        self.latest_outcome: TrialOutcome | None = None
        self._latest_metrics: dict[str, float] | None = None

    def _init_model(self, trial: Any) -> Any:
        if trial is None:  # Trainer.__init__ builds one model up front: a config check before any trial
            try:
                return self.hpsearch_model_init(self.space.representative())
            except HPSearchError:
                raise
            except Exception as error:
                raise ConfigError(f"model.model_init: building the model failed ({type(error).__name__}: {first_line(error)})") from None
        # transformers calls model_init before _hp_search_setup, so assign here first.
        self._current_params = self.assign(trial)
        return self.hpsearch_model_init(self._current_params)

    def _hp_search_setup(self, trial: Any) -> None:
        self._trial = trial
        if trial is None:
            return
        for name, value in self._current_params.items():
            if name in TRAINING_ARGUMENT_FIELDS:
                setattr(self.args, name, value)
        self._train_batch_size = self.args.train_batch_size
        self.create_accelerator_and_postprocess()

    def _report_to_hp_search(self, trial: Any, step: int, metrics: dict[str, float]) -> None:
        metrics = {**metrics, **self._model_metrics()}
        self._latest_metrics = dict(metrics)
        self.objectives.values(metrics)  # a missing metric is a config error, not a failed trial
        if self.intermediate_reporter is not None:
            self.intermediate_reporter(step, dict(metrics))
        else:
            super()._report_to_hp_search(trial, step, metrics)

    def train(self, resume_from_checkpoint: Any = None, trial: Any = None, **kwargs: Any) -> Any:
        """Train one trial; on return ``self.objective`` holds its objective value(s)."""
        if trial is None:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        started = time.perf_counter()
        self.objective = None
        self._latest_metrics = None
        self._current_params = {}
        try:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
            metrics = dict(self._latest_metrics or self.evaluate())
            metrics.update(self._model_metrics())
            values = self.objectives.values(metrics)
            if any(math.isnan(value) for value in values):
                raise TrialFailed(f"objective is NaN ({dict(zip(self.objectives.names, values))})")
        except TrialFailed as error:
            self._notify(trial, "FAIL", started, error=str(error))
            raise
        except HPSearchError:
            raise
        except Exception as error:
            if _is_prune_signal(error):
                self._notify(trial, "PRUNED", started)
                raise
            message = f"{type(error).__name__}: {first_line(error)}"
            self._notify(trial, "FAIL", started, error=message)
            raise TrialFailed(message) from error
        self.objective = values if self.objectives.is_multi else values[0]
        self._notify(trial, "COMPLETE", started, values=values, metrics=metrics)
        return output

    def _model_metrics(self) -> dict[str, float]:
        """Parameter count and median forward latency on one eval batch, when an objective asks for them."""
        wanted = self.objectives.model_metrics
        if not wanted:
            return {}
        model = self.accelerator.unwrap_model(self.model)
        measured = {"model_num_parameters": float(sum(p.numel() for p in model.parameters()))}
        if "model_latency_ms" in wanted:
            batch = self._prepare_inputs(next(iter(self.get_eval_dataloader())))
            batch.pop("labels", None)
            model.eval()
            timings = []
            with torch.inference_mode():
                for _ in range(LATENCY_REPEATS + 1):  # the first pass warms up
                    started = time.perf_counter()
                    model(**batch)
                    timings.append((time.perf_counter() - started) * 1000)
            measured["model_latency_ms"] = float(statistics.median(timings[1:]))
        return measured

    def run_trial(self, params: Mapping[str, Any]) -> TrialOutcome:
        """Train one trial from typed values; a failed trial comes back as a FAIL outcome."""
        try:
            self.train(trial=dict(params))
        except TrialFailed:
            pass
        return self.latest_outcome

    def _notify(
        self,
        trial: Any,
        state: str,
        started: float,
        values: list[float] | None = None,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        numeric = {k: float(v) for k, v in (metrics or self._latest_metrics or {}).items() if isinstance(v, (int, float))}
        outcome = TrialOutcome(dict(self._current_params), state, values, numeric, time.perf_counter() - started, error)
        self.latest_outcome = outcome
        for listener in self.listeners:
            listener(trial, outcome)


def _is_prune_signal(error: BaseException) -> bool:
    # optuna.TrialPruned; matched by name so optuna stays an optional import here.
    return type(error).__name__ == "TrialPruned"
