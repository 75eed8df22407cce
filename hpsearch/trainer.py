"""The Trainer every backend drives: one ``train(trial=...)`` call per trial.

It turns a backend's trial into typed hyperparameters, routes each one to ``TrainingArguments`` or to
``model_init``, always ends with the evaluation metrics and objective, and turns a trial's failure
(an exception or a NaN objective) into ``TrialFailed`` so backends can record it and go on.
A backend hands it what it needs for a search in one place: ``attach(TrialHooks(...))``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from transformers import Trainer

from hpsearch.best_model import BestModelKeeper
from hpsearch.distributed import Coordinator
from hpsearch.errors import CollectiveTimeout, ConfigError, HPSearchError, TrialFailed, first_line
from hpsearch.loop import INTERRUPTED
from hpsearch.model import ModelInit
from hpsearch.model_metrics import MODEL_METRICS
from hpsearch.objective import Objectives
from hpsearch.space import SearchSpace
from hpsearch.training import TRAINING_ARGUMENT_FIELDS
from hpsearch.trials import TrialOutcome, TrialState


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


@dataclass(frozen=True)
class TrialHooks:
    """What a backend hands the trainer for a search; ``SearchTrainer.attach`` is the only way in.

    ``assign`` turns the backend's trial object into typed hyperparameters (transformers' own search loop
    passes optuna trials); ``report`` receives every in-training evaluation as ``(trial, step, metrics)`` and
    may raise a prune signal (None: transformers' own reporting, i.e. optuna pruning); ``finished`` receives
    each trial's outcome, exactly once.
    """

    assign: Callable[[Any], dict[str, Any]] | None = None
    report: Callable[[Any, int, dict[str, float]], None] | None = None
    finished: Callable[[Any, TrialOutcome], None] | None = None


class Assigned(dict):
    """Typed hyperparameters the backend already chose, with ``handle``, the backend's own trial object.

    A dict, as transformers expects of any trial that is not optuna's.
    """

    def __init__(self, params: Mapping[str, Any], handle: Any = None) -> None:
        super().__init__(params)
        self.handle = handle


class SearchTrainer(Trainer):
    def __init__(
        self,
        *,
        hpsearch_model_init: ModelInit,
        space: SearchSpace,
        objectives: Objectives,
        coordinator: Coordinator | None = None,
        best_model: BestModelKeeper | None = None,
        **kwargs: Any,
    ) -> None:
        self.hpsearch_model_init = hpsearch_model_init
        self.best_model = best_model  # save_best_model=true
        self.space = space
        self.objectives = objectives
        self.coordinator = coordinator  # set under torchrun
        self.hooks = TrialHooks()
        self._current_params: dict[str, Any] = {}
        super().__init__(model_init=self._init_model, **kwargs)
        self.latest_outcome: TrialOutcome | None = None
        self.rank_reports: list[list[Any]] = []  # rank zero: every rank's (state, error, trained values) per trial
        self._chosen_metrics: dict[str, float] | None = None
        self._in_collectives = False
        self._measured_model: dict[str, float] | None = None  # per trial: the architecture does not change

    def attach(self, hooks: TrialHooks) -> None:
        self.hooks = hooks

    def _init_model(self, trial: Any) -> Any:
        if trial is None:  # Trainer.__init__ builds one model up front: a config check before any trial
            try:
                return self.hpsearch_model_init(self.space.representative())
            except HPSearchError:
                raise
            except Exception as error:
                raise ConfigError(f"model.model_init: building the model failed ({type(error).__name__}: {first_line(error)})") from None
        if INTERRUPTED.is_set():  # a Ctrl-C that a finalizer swallowed: stop before the next trial
            raise KeyboardInterrupt
        # transformers calls model_init before _hp_search_setup, so assign here first.
        if isinstance(trial, Assigned):
            self._current_params = dict(trial)
        else:
            self._current_params = (self.hooks.assign or self.space.cast)(trial)
        if self.coordinator is not None and self.coordinator.is_leader:
            self.coordinator.decide(("trial", self._current_params))
        model = self.hpsearch_model_init(self._current_params)
        self._in_collectives = self.coordinator is not None  # from here on, DDP ranks meet in collectives
        return model

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
        self._chosen_metrics = self.objectives.choose(self._chosen_metrics, metrics)
        self.objectives.values(metrics)  # a missing metric is a config error, not a failed trial
        if self.coordinator is not None and not self.coordinator.is_leader:
            if self.coordinator.decide()[0] == "prune":
                raise TrialPruned(f"rank zero pruned the trial at step {step}")
            return
        try:
            if self.hooks.report is not None:
                self.hooks.report(trial.handle if isinstance(trial, Assigned) else trial, step, dict(metrics))
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
        self._chosen_metrics = None
        self._measured_model = None
        self._current_params = {}
        self._in_collectives = False
        output, values, metrics, error, raised = None, None, None, None, None
        try:
            output = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
            metrics = dict(self._chosen_metrics or self.evaluate())
            metrics.update(self._model_metrics())
            values = self.objectives.values(metrics)
            state = TrialState.COMPLETE
            if any(math.isnan(value) for value in values):
                state, error = TrialState.FAIL, f"objective is NaN ({dict(zip(self.objectives.names, values))})"
        except HPSearchError:
            raise
        except Exception as exception:
            raised = exception
            if _is_prune_signal(exception):
                state = TrialState.PRUNED
            else:
                state, error = TrialState.FAIL, f"{type(exception).__name__}: {first_line(exception)}"
                if self._in_collectives:
                    self._abandon(trial, error, started, exception)
        state, error = self._agree(trial, state, error, started)
        self._finish(trial, state, started, values=values if state is TrialState.COMPLETE else None, metrics=metrics, error=error)
        if state is TrialState.COMPLETE and self.best_model is not None and (self.coordinator is None or self.coordinator.is_leader):
            self.best_model.offer(self.accelerator.unwrap_model(self.model), self.processing_class, self.latest_outcome)
        if state is TrialState.PRUNED:
            raise raised if raised is not None else TrialPruned("pruned")
        if state is TrialState.FAIL:
            raise TrialFailed(error) from raised
        self.objective = values if self.objectives.is_multi else values[0]
        return output

    def _abandon(self, trial: Any, error: str, started: float, exception: Exception) -> None:
        """A rank raised mid-training under DDP: the other ranks may be waiting inside a gradient all-reduce
        that will never complete, so this rank leaves the job at once (rank zero records the trial as failed
        first). torchrun then stops the group, and with ``--max-restarts`` restarts it to resume the search."""
        rank = self.coordinator.rank
        if self.coordinator.is_leader:
            self._finish(trial, TrialState.FAIL, started, error=f"rank {rank}: {error}")
        raise CollectiveTimeout(
            f"training.ddp_timeout: rank {rank} failed mid-training ({error}); torchrun stops the job, "
            "or restarts it with --max-restarts"
        ) from exception

    def _agree(self, trial: Any, state: TrialState, error: str | None, started: float) -> tuple[TrialState, str | None]:
        """Under DDP, a trial failed anywhere failed everywhere; rank zero keeps every rank's report."""
        if self.coordinator is None:
            return state, error
        try:
            reports = self.coordinator.gather((state.value, error, self._trained_values(), self._model_facts()))
        except CollectiveTimeout as lost:
            # Another rank is gone: record the trial as failed before this rank gives up too.
            self._finish(trial, TrialState.FAIL, started, error=f"{error or 'rank lost'}; {lost}")
            raise
        if self.coordinator.is_leader:
            self.rank_reports.append(reports)
        for index, (rank_state, rank_error, *_) in enumerate(reports):
            if rank_state == TrialState.FAIL.value:
                return TrialState.FAIL, f"rank {index}: {rank_error}"
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

    def _model_facts(self) -> dict[str, str]:
        """The class that wrapped the model for training, and a checksum of its parameters."""
        if self.model is None:
            return {}
        digest = hashlib.sha256()
        for parameter in self.accelerator.unwrap_model(self.model).parameters():
            digest.update(parameter.detach().cpu().numpy().tobytes())
        return {"wrapper": type(self.model_wrapped).__name__, "checksum": digest.hexdigest()[:16]}

    def _model_metrics(self) -> dict[str, float]:
        """The model-side metrics an objective asks for, measured once per trial on one eval batch."""
        wanted = self.objectives.model_metrics
        if not wanted:
            return {}
        if self._measured_model is None:
            model = self.accelerator.unwrap_model(self.model)
            batch = self._prepare_inputs(next(iter(self.get_eval_dataloader())))
            batch.pop("labels", None)
            self._measured_model = {name: MODEL_METRICS[name](model, batch) for name in wanted}
        return self._measured_model

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

    def run_trial(self, params: Mapping[str, Any], handle: Any = None, resume_from_checkpoint: str | None = None) -> TrialOutcome:
        """Train one trial from typed values; a failed or pruned trial comes back as its outcome."""
        self.latest_outcome = None
        try:
            self.train(resume_from_checkpoint=resume_from_checkpoint, trial=Assigned(params, handle))
        except TrialFailed:
            self._free_memory()
        except TrialPruned:
            pass
        except Exception as error:
            if not _is_prune_signal(error):
                raise
        return self.latest_outcome

    def _free_memory(self) -> None:
        """After a failed trial (one that ran out of GPU memory, say), drop what it held before the next one."""
        import gc

        import torch

        self.model = self.model_wrapped = None
        self.optimizer = self.lr_scheduler = None
        self.accelerator.free_memory()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _finish(
        self,
        trial: Any,
        state: TrialState,
        started: float,
        values: list[float] | None = None,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        numeric = {k: float(v) for k, v in (metrics or self._chosen_metrics or {}).items() if isinstance(v, (int, float))}
        outcome = TrialOutcome(dict(self._current_params), state, values, numeric, time.perf_counter() - started, error)
        self.latest_outcome = outcome
        if self.hooks.finished is not None:
            self.hooks.finished(trial.handle if isinstance(trial, Assigned) else trial, outcome)


def _is_prune_signal(error: BaseException) -> bool:
    # optuna.TrialPruned; matched by name so optuna stays an optional import here.
    return type(error).__name__ == "TrialPruned"
