"""The Trainer every backend drives: one ``run_trial(params, handle)`` call per trial.

It routes each typed hyperparameter to ``TrainingArguments`` or to ``model_init``, always ends with the evaluation
metrics and objective, and turns a trial's failure (an exception or a NaN objective) into a FAIL outcome, so that
the search records it and goes on. A backend sees each in-training evaluation through ``reporter``.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from transformers import Trainer
from transformers.trainer_utils import enable_full_determinism, set_seed

from hpsearch.best_model import BestModelKeeper
from hpsearch.distributed import Coordinator, Decision, Message, RankReport
from hpsearch.errors import CollectiveTimeout, ConfigError, HPSearchError, first_line
from hpsearch.interrupt import INTERRUPTED
from hpsearch.model import TrialModels
from hpsearch.model_metrics import MODEL_METRICS
from hpsearch.objective import Objectives
from hpsearch.packing import DeviceShare, is_out_of_memory
from hpsearch.space import SearchSpace
from hpsearch.training import argument_fields
from hpsearch.trials import INFEASIBLE, RETRIED_METRIC, TrialOutcome, TrialPruned, TrialState

# (the backend's trial handle, the global step, that evaluation's metrics); may raise TrialPruned
Reporter = Callable[[Any, int, dict[str, float]], None]


def trainer_class(path: str) -> type[Trainer]:
    """``trainer._target_``: the Trainer class each trial uses, checked to be one."""
    import importlib

    module_name, _, name = path.rpartition(".")
    try:  # not Hydra's get_class, which logs its own error lines first
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        hint = "; fix: pip install 'hpsearch[trl]'" if path.startswith("trl.") else ""
        raise ConfigError(
            f"trainer._target_: cannot import {path!r} ({type(error).__name__}: {first_line(error)}){hint}"
        ) from None
    if not (isinstance(found, type) and issubclass(found, Trainer)):
        raise ConfigError(
            f"trainer._target_: {path} is not a transformers.Trainer subclass; name one "
            "(transformers.Trainer, trl.SFTTrainer, or your own subclass)"
        )
    return found


def search_trainer_class(base: type[Trainer]) -> type[SearchTrainer]:
    """hpsearch's per-trial hooks on ``base``: ``SearchTrainer`` for ``Trainer`` itself, else a class that puts
    them in front of ``base``'s own methods (its ``compute_loss``, TRL's preparation of SFT data), which
    transformers' own search cannot do with a fixed Trainer subclass. One class per base, made once."""
    if issubclass(base, SearchTrainer):
        return base
    if base is Trainer:
        return SearchTrainer
    if base not in _WITH_HOOKS:
        # MRO: the new class, SearchTrainer, base, ..., Trainer: SearchTrainer's super() calls reach base's.
        namespace = {"__module__": __name__, "hpsearch_base": base}
        _WITH_HOOKS[base] = type(f"Search{base.__name__}", (SearchTrainer, base), namespace)
    return _WITH_HOOKS[base]


_WITH_HOOKS: dict[type[Trainer], type[SearchTrainer]] = {}


class SearchTrainer(Trainer):
    hpsearch_base: type[Trainer] = Trainer  # the Trainer class whose methods the hooks sit in front of

    def __init__(
        self,
        *,
        hpsearch_model_init: TrialModels,
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
        self.reporter: Reporter | None = None  # set by the search: each in-training evaluation goes to the backend
        self.device_share = DeviceShare.from_environment()  # set in a packed worker (workers=auto)
        self._trial_params: dict[str, Any] | None = None  # the running trial's hyperparameters
        self._handle: Any = None  # the backend's own object for the running trial
        args = kwargs["args"]
        # What an inactive (conditional) parameter trains with: the arguments' own value, whatever an earlier
        # trial set
        self._default_arguments = {name: getattr(args, name) for name in space.names if hasattr(args, name)}
        # The model-side metrics an objective or a constraint asks for
        named = {name for constraint in space.constraints for name in constraint.metrics if name in MODEL_METRICS}
        self._wanted_model_metrics = sorted({*objectives.model_metrics, *named})
        # The first model as Trainer builds one from model_init (after seeding), passed as a model: a Trainer
        # subclass need not take model_init (TRL's SFTTrainer does not). Each trial's train() builds its own.
        enable_full_determinism(args.seed) if args.full_determinism else set_seed(args.seed)
        super().__init__(model=self._init_model(), **kwargs)
        self.model_init = self._init_model
        self.latest_outcome: TrialOutcome | None = None
        self.rank_reports: list[list[RankReport]] = []  # rank zero: every rank's report, per trial
        self._chosen_metrics: dict[str, float] | None = None
        self._in_collectives = False
        self._measured_model: dict[str, float] | None = None  # per trial: the architecture does not change

    def _init_model(self) -> Any:
        if self._trial_params is None:  # Trainer.__init__ builds one model up front: a config check before any trial
            try:
                return self.hpsearch_model_init(self.space.representative())
            except HPSearchError:
                raise
            except Exception as error:  # noqa: BLE001 - any error of the user's model_init is a config error
                raise ConfigError(
                    f"model.model_init: building the model failed ({type(error).__name__}: {first_line(error)})"
                ) from None
        if INTERRUPTED.is_set():  # a Ctrl-C that a finalizer swallowed: stop before the next trial
            raise KeyboardInterrupt
        if self.coordinator is not None and self.coordinator.is_leader:
            self.coordinator.decide(Message(Decision.TRIAL, self._trial_params))
        model = self.hpsearch_model_init(self._trial_params)
        self._in_collectives = self.coordinator is not None  # from here on, DDP ranks meet in collectives
        return model

    def _hp_search_setup(self, trial: Any) -> None:
        """Called by ``Trainer.train`` after the model is built: the trial's training arguments take effect."""
        self._trial = None
        if self._trial_params is None:
            return
        fields = argument_fields(type(self.args))
        for name, value in {**self._default_arguments, **self._trial_params}.items():
            if name in fields:
                setattr(self.args, name, value)
        self._train_batch_size = self.args.train_batch_size
        self.create_accelerator_and_postprocess()
        # TRL's trainers count tokens and average metrics over their lifetime: each trial starts its own.
        if hasattr(self, "_total_train_tokens"):
            self._total_train_tokens = 0
        for lists in getattr(self, "_metrics", {}).values():
            lists.clear()

    def _report_to_hp_search(self, trial: Any, step: int, metrics: dict[str, float]) -> None:
        metrics = {**metrics, **self._model_metrics()}
        self._chosen_metrics = self.objectives.choose(self._chosen_metrics, metrics)
        self.objectives.values(metrics)  # a missing metric is a config error, not a failed trial
        if self.coordinator is not None and not self.coordinator.is_leader:
            if self.coordinator.decide().decision is Decision.PRUNE:
                raise TrialPruned(f"rank zero pruned the trial at step {step}")
            return
        try:
            if self.reporter is not None:
                self.reporter(self._handle, step, dict(metrics))
        except TrialPruned:
            if self.coordinator is not None:
                self.coordinator.decide(Message(Decision.PRUNE))
            raise
        if self.coordinator is not None:
            self.coordinator.decide(Message(Decision.CONTINUE))

    def run_trial(
        self,
        params: Mapping[str, Any],
        handle: Any = None,
        resume_from_checkpoint: str | None = None,
        constrained: bool = True,
    ) -> TrialOutcome:
        """Train one trial from typed values; its outcome, whether it completed, failed or was pruned.

        A point that breaks a parameter constraint is failed untrained, unless ``constrained`` is false (the
        ``workers=auto`` probe measures the space's most demanding point, feasible or not). In a packed worker, a
        trial that runs out of memory is trained once more, alone on its device; its outcome then carries
        ``retried_out_of_memory``."""
        infeasible = self._infeasible(params) if constrained else None
        if infeasible is not None:
            return infeasible
        share = self.device_share
        if share is None:
            return self._train_trial(params, handle, resume_from_checkpoint)
        try:
            with share.trial():
                outcome = self._train_trial(params, handle, resume_from_checkpoint)
        finally:
            self._free_memory()  # what this worker holds between trials, a neighbour's retry may need
        if outcome.state is not TrialState.FAIL or not is_out_of_memory(outcome.error):
            return outcome
        with share.alone():
            outcome = self._train_trial(params, handle, resume_from_checkpoint)
            self._free_memory()
        error = outcome.error and f"{outcome.error} (also alone on its device)"
        metrics = {**outcome.metrics, RETRIED_METRIC: 1.0}
        self.latest_outcome = dataclasses.replace(outcome, metrics=metrics, error=error)
        return self.latest_outcome

    def _infeasible(self, params: Mapping[str, Any]) -> TrialOutcome | None:
        """A point that violates a parameter constraint is failed here, never trained (``hpsearch.constraints``)."""
        found = self.space.constraint_values(params, on_outcome=False)
        violated = [constraint for constraint, value in found.items() if value > 0]
        if not violated:
            return None
        self.latest_outcome = TrialOutcome(
            state=TrialState.FAIL,
            params=dict(params),
            metrics={constraint.metric: value for constraint, value in found.items()},
            duration_s=0.0,
            error=INFEASIBLE + "; ".join(constraint.describe(params) for constraint in violated),
        )
        return self.latest_outcome

    def _train_trial(
        self, params: Mapping[str, Any], handle: Any = None, resume_from_checkpoint: str | None = None
    ) -> TrialOutcome:
        started = time.perf_counter()
        self.latest_outcome = None
        self._trial_params, self._handle = dict(params), handle
        self._chosen_metrics = None
        self._measured_model = None
        self._in_collectives = False
        values, metrics, error = None, None, None
        try:
            # The trial is not passed to Trainer.train: hpsearch applies its hyperparameters itself, and
            # transformers' own search integrations (which accept a dict trial only beside ray or wandb) stay out.
            self.train(resume_from_checkpoint=resume_from_checkpoint)
            metrics = dict(self._chosen_metrics or self.evaluate())
            metrics.update(self._model_metrics())
            metrics.update(self.hpsearch_model_init.describe(self.accelerator.unwrap_model(self.model)))
            found = self.space.constraint_values({**params, **metrics})
            metrics.update({constraint.metric: value for constraint, value in found.items()})
            values = self.objectives.values(metrics)
            state = TrialState.COMPLETE
            if any(math.isnan(value) for value in values):
                state, error = (
                    TrialState.FAIL,
                    f"objective is NaN ({dict(zip(self.objectives.names, values, strict=False))})",
                )
        except HPSearchError:
            raise
        except TrialPruned:
            state = TrialState.PRUNED
        except Exception as exception:  # noqa: BLE001 - whatever a trial raises fails that trial alone
            state, error = TrialState.FAIL, f"{type(exception).__name__}: {first_line(exception)}"
            if self._in_collectives:
                self._abandon(error, started, exception)
        try:
            state, error = self._agree(state, error, started)
            outcome = self._finish(state, started, values if state is TrialState.COMPLETE else None, metrics, error)
        finally:
            self._trial_params = self._handle = None
        if (
            state is TrialState.COMPLETE
            and self.best_model is not None
            and (self.coordinator is None or self.coordinator.is_leader)
        ):
            self.best_model.offer(self.accelerator.unwrap_model(self.model), self.processing_class, outcome)
        self.hpsearch_model_init.release()
        if state is TrialState.FAIL:
            self._free_memory()
        return outcome

    def _abandon(self, error: str, started: float, exception: Exception) -> None:
        """A rank raised mid-training under DDP: the other ranks may be waiting inside a gradient all-reduce
        that will never complete, so this rank leaves the job at once (rank zero records the trial as failed
        first). torchrun then stops the group, and with ``--max-restarts`` restarts it to resume the search."""
        assert self.coordinator is not None
        rank = self.coordinator.rank
        if self.coordinator.is_leader:
            self._finish(TrialState.FAIL, started, error=f"rank {rank}: {error}")
        raise CollectiveTimeout(
            f"training.ddp_timeout: rank {rank} failed mid-training ({error}); torchrun stops the job, "
            "or restarts it with --max-restarts"
        ) from exception

    def _agree(self, state: TrialState, error: str | None, started: float) -> tuple[TrialState, str | None]:
        """Under DDP, a trial failed anywhere failed everywhere; rank zero keeps every rank's report."""
        if self.coordinator is None:
            return state, error
        try:
            reports = self.coordinator.gather(RankReport(state, error, self._trained_values(), self._model_facts()))
        except CollectiveTimeout as lost:
            # Another rank is gone: record the trial as failed before this rank gives up too.
            self._finish(TrialState.FAIL, started, error=f"{error or 'rank lost'}; {lost}")
            raise
        if self.coordinator.is_leader:
            self.rank_reports.append(reports)
        for index, report in enumerate(reports):
            if report.state is TrialState.FAIL:
                return TrialState.FAIL, f"rank {index}: {report.error}"
        return state, error

    def _trained_values(self) -> dict[str, Any]:
        """Each hyperparameter as this rank really used it, read back from its arguments and model."""
        config = getattr(self.accelerator.unwrap_model(self.model), "config", None) if self.model is not None else None
        values, fields = {}, argument_fields(type(self.args))
        for name, value in (self._trial_params or {}).items():
            if name in fields:
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
        """The model-side metrics an objective or a constraint asks for, measured once per trial on one eval batch."""
        wanted = self._wanted_model_metrics
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
        if checkpoint is None or "learning_rate" not in (self._trial_params or {}):
            return
        assert self.optimizer is not None and self.lr_scheduler is not None  # loaded just above
        rate = self.args.learning_rate
        for group in self.optimizer.param_groups:
            group["initial_lr"] = rate
        self.lr_scheduler.base_lrs = [rate] * len(self.optimizer.param_groups)

    def _free_memory(self) -> None:
        """After a failed trial (one that ran out of GPU memory, say), drop what it held before the next one."""
        import torch

        self.model = self.model_wrapped = None  # type: ignore[assignment] # until the next trial builds its own
        self.optimizer = self.lr_scheduler = None
        self.accelerator.free_memory()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _finish(
        self,
        state: TrialState,
        started: float,
        values: list[float] | None = None,
        metrics: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> TrialOutcome:
        numeric = {
            k: float(v) for k, v in (metrics or self._chosen_metrics or {}).items() if isinstance(v, (int, float))
        }
        self.latest_outcome = TrialOutcome(
            state=state,
            params=dict(self._trial_params or {}),
            values=values,
            metrics=numeric,
            duration_s=time.perf_counter() - started,
            error=error,
        )
        return self.latest_outcome
