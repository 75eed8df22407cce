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

from hpsearch.distributed import Coordinator
from hpsearch.errors import ConfigError, HPSearchError, TrialFailed, first_line
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


class TrialPruned(Exception):
    """Raised on a non-zero rank when rank zero pruned the trial (optuna's own class on rank zero)."""


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
        self.coordinator: Coordinator | None = None  # set under torchrun
        self.rank_reports: list[list[Any]] = []  # rank zero: every rank's (state, error, trained values) per trial
        self._latest_metrics: dict[str, float] | None = None
        self._measured_model: dict[str, float] | None = None  # per trial: the architecture does not change

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
        if self.coordinator is not None and self.coordinator.is_leader:
            self.coordinator.decide(("trial", self._current_params))
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
        if self.coordinator is not None and not self.coordinator.is_leader:
            if self.coordinator.decide()[0] == "prune":
                raise TrialPruned(f"rank zero pruned the trial at step {step}")
            return
        try:
            if self.intermediate_reporter is not None:
                self.intermediate_reporter(step, dict(metrics))
            else:
                super()._report_to_hp_search(trial, step, metrics)
        except Exception as error:
            if self.coordinator is not None and _is_prune_signal(error):
                self.coordinator.decide(("prune",))
            raise
        if self.coordinator is not None:
            self.coordinator.decide(("continue",))

    def train(self, resume_from_checkpoint: Any = None, trial: Any = None, **kwargs: Any) -> Any:
        """Train one trial; on return ``self.objective`` holds its objective value(s)."""
        if trial is None:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        started = time.perf_counter()
        self.objective = None
        self._latest_metrics = None
        self._measured_model = None
        self._current_params = {}
        output, values, metrics, error, raised = None, None, None, None, None
        try:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
            metrics = dict(self._latest_metrics or self.evaluate())
            metrics.update(self._model_metrics())
            values = self.objectives.values(metrics)
            state = "COMPLETE"
            if any(math.isnan(value) for value in values):
                state, error = "FAIL", f"objective is NaN ({dict(zip(self.objectives.names, values))})"
        except HPSearchError:
            raise
        except Exception as exception:
            raised = exception
            state, error = ("PRUNED", None) if _is_prune_signal(exception) else ("FAIL", f"{type(exception).__name__}: {first_line(exception)}")
        state, error = self._agree(state, error)
        self._notify(trial, state, started, values=values if state == "COMPLETE" else None, metrics=metrics, error=error)
        if state == "PRUNED":
            raise raised if raised is not None else TrialPruned("pruned")
        if state == "FAIL":
            raise TrialFailed(error) from raised
        self.objective = values if self.objectives.is_multi else values[0]
        return output

    def _agree(self, state: str, error: str | None) -> tuple[str, str | None]:
        """Under DDP, a trial failed anywhere failed everywhere; rank zero keeps every rank's report."""
        if self.coordinator is None:
            return state, error
        reports = self.coordinator.gather((state, error, self._trained_values()))
        if self.coordinator.is_leader:
            self.rank_reports.append(reports)
        for index, (rank_state, rank_error, _) in enumerate(reports):
            if rank_state == "FAIL":
                return "FAIL", f"rank {index}: {rank_error}"
        return state, error

    def _trained_values(self) -> dict[str, Any]:
        """Each hyperparameter as this rank really used it, read back from its arguments and model."""
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None) if self.model is not None else None
        values = {}
        for name, value in self._current_params.items():
            if name in TRAINING_ARGUMENT_FIELDS:
                values[name] = getattr(self.args, name)
            else:
                values[name] = getattr(config, name, value)
        return values

    def _model_metrics(self) -> dict[str, float]:
        """Parameter count and median forward latency on one eval batch, when an objective asks for them."""
        wanted = self.objectives.model_metrics
        if not wanted:
            return {}
        if self._measured_model is not None:  # measured at an earlier in-training evaluation
            return self._measured_model
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
        self._measured_model = measured
        return measured

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        """Resuming another trial's checkpoint (Ray PBT's exploit step) keeps this trial's learning rate:
        the restored scheduler would otherwise bring back the old one."""
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or "learning_rate" not in self._current_params:
            return
        rate = self.args.learning_rate
        for group in self.optimizer.param_groups:
            group["initial_lr"] = rate
        self.lr_scheduler.base_lrs = [rate] * len(self.optimizer.param_groups)

    def run_trial(self, params: Mapping[str, Any], resume_from_checkpoint: str | None = None) -> TrialOutcome:
        """Train one trial from typed values; a failed trial comes back as a FAIL outcome."""
        try:
            self.train(resume_from_checkpoint=resume_from_checkpoint, trial=dict(params))
        except (TrialFailed, TrialPruned):
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
