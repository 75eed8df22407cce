"""Ray Tune backend: one Ray trial per hpsearch trial, on a local Ray runtime or an existing cluster.

Each Ray worker receives, once through the object store, only what a trial needs (the tokenised
datasets, the tokenizer, ``model_init``, the training arguments, space and objectives) and builds its own
``SearchTrainer``; the driver's Trainer, with its progress bar and locks, never travels.

Space mapping. Ray's integer upper bounds are exclusive, so hpsearch adds one to keep ``[low, high]``:

=========================  ===================================================================
neutral                    Ray Tune
=========================  ===================================================================
float [low, high]          ``tune.uniform(low, high)``
float, log: true           ``tune.loguniform(low, high)``
float, step: s             ``tune.quniform(low, high, s)`` when low is a multiple of s (Ray rounds
                           to multiples of s, which then fall in [low, high]); else
                           ``tune.choice([low, low+s, ..., high])``
int [low, high]            ``tune.randint(low, high + 1)``
int, log: true             ``tune.lograndint(low, high + 1)``
int, step: s > 1           ``tune.qrandint(low, high, s)`` (inclusive for s > 1) when low is a
                           multiple of s; else ``tune.choice(range(low, high + 1, s))``
categorical                ``tune.choice(choices)``
fixed                      the value itself
=========================  ===================================================================

Results go under ``<run_dir>/ray``. Schedulers (ASHA, median stopping, PBT) need in-training evaluation;
under PBT every in-training evaluation also saves a checkpoint (transformers' Ray layout), an exploited
trial resumes from its donor's checkpoint with its own, perturbed hyperparameters (the restored learning-rate
schedule is rebased onto the new rate), and only parameters that act during training make sense to mutate.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.backends.base import Backend, SearchJob, require_in_training_eval
from hpsearch.errors import BackendUnavailableError, ConfigError, first_line
from hpsearch.objective import Objectives
from hpsearch.results import TrialOutcome, TrialRecord
from hpsearch.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, SearchSpace

SCHEDULERS = ("none", "asha", "median", "pbt")
SEARCH_ALGORITHMS = ("basic", "optuna")
DONE_FLAG = "hpsearch_done"  # set in a trial's final report; a trial stopped early by a scheduler lacks it


def domain(param: Param) -> Any:
    """The Ray Tune search domain of a neutral parameter (a plain value for fixed ones)."""
    from ray import tune

    if isinstance(param, FixedParam):
        return param.value
    if isinstance(param, CategoricalParam):
        return tune.choice(list(param.choices))
    if isinstance(param, FloatParam):
        if param.log:
            return tune.loguniform(param.low, param.high)
        if param.step is None:
            return tune.uniform(param.low, param.high)
        if param.on_multiples_of_step:
            return tune.quniform(param.low, param.high, param.step)
        return tune.choice(param.values())
    assert isinstance(param, IntParam)
    if param.log:
        return tune.lograndint(param.low, param.high + 1)
    if param.step == 1:
        return tune.randint(param.low, param.high + 1)
    if param.low % param.step == 0:
        return tune.qrandint(param.low, param.high, param.step)
    return tune.choice(param.values())


def param_space(space: SearchSpace) -> dict[str, Any]:
    return {param.name: domain(param) for param in space}


@dataclass
class TrialPayload:
    """Everything a Ray worker needs to train trials; shipped once through the object store."""

    trainer_kwargs: dict[str, Any]
    space: SearchSpace
    objectives: Objectives
    report_intermediate: bool
    checkpoint_reports: bool  # PBT copies checkpoints between trials
    threads: int

    def trainer(self) -> Any:
        import torch
        from transformers import PrinterCallback

        from hpsearch.trainer import SearchTrainer

        torch.set_num_threads(self.threads)  # one trial per reserved CPU, not one per core
        trainer = SearchTrainer(space=self.space, objectives=self.objectives, **self.trainer_kwargs)
        trainer.remove_callback(PrinterCallback)
        return trainer


def _final_report(outcome: TrialOutcome, objectives: Objectives) -> dict[str, Any]:
    values = dict(zip(objectives.names, outcome.values or []))
    return {**outcome.metrics, **values, "duration_s": outcome.duration_s, DONE_FLAG: True}


def train_trial(config: dict[str, Any], payload: TrialPayload) -> None:
    """The Ray Tune function trainable: runs in a Ray worker."""
    from ray import tune

    from hpsearch.errors import TrialFailed

    trainer = payload.trainer()
    if payload.report_intermediate:
        trainer.intermediate_reporter = lambda step, metrics: _report(trainer, step, metrics, payload.checkpoint_reports)
    outcome = trainer.run_trial(config, resume_from_checkpoint=_restored_checkpoint())
    if outcome.state == "FAIL":
        raise TrialFailed(outcome.error or "trial failed")
    tune.report(_final_report(outcome, payload.objectives))


def _report(trainer: Any, step: int, metrics: dict[str, float], with_checkpoint: bool) -> None:
    from ray import tune

    if not with_checkpoint:
        tune.report({**metrics, "step": step})
        return
    with tempfile.TemporaryDirectory() as folder:
        trainer._tune_save_checkpoint(checkpoint_dir=folder)  # transformers' own Ray checkpoint layout
        tune.report({**metrics, "step": step}, checkpoint=tune.Checkpoint.from_directory(folder))


def _restored_checkpoint() -> str | None:
    """The checkpoint Ray hands a trial to continue from (PBT's exploit step), as a Trainer checkpoint path."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    found = sorted(Path(checkpoint.to_directory()).glob("checkpoint-*"))
    return str(found[-1]) if found else None


class RayBackend(Backend):
    name = "ray"
    package = "ray[tune]"
    extra = "ray"

    def __init__(self) -> None:
        self._results: Any = None

    def validate(self, settings: Mapping[str, Any], objectives: Objectives, training: Mapping[str, Any]) -> None:
        self.require("ray.tune")
        scheduler, algorithm = settings.get("scheduler", "none"), settings.get("search_alg", "basic")
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"backend.scheduler: unknown scheduler {scheduler!r}; choose one of {list(SCHEDULERS)}")
        if algorithm not in SEARCH_ALGORITHMS:
            raise ConfigError(f"backend.search_alg: unknown {algorithm!r}; choose one of {list(SEARCH_ALGORITHMS)}")
        if scheduler != "none":
            if objectives.is_multi:
                raise ConfigError(f"backend.scheduler={scheduler}: Ray schedulers stop trials on one metric; set backend.scheduler=none")
            require_in_training_eval(f"backend.scheduler={scheduler}", training, "early stopping")
        if objectives.is_multi and algorithm != "optuna":
            raise ConfigError("backend.search_alg: several objectives need search_alg=optuna (OptunaSearch)")

    def _scheduler(self, job: SearchJob) -> Any:
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, PopulationBasedTraining

        options = dict(job.settings.get("scheduler_kwargs") or {})
        name = job.settings.get("scheduler", "none")
        if name == "pbt":  # explores around the same domains the trials were drawn from
            mutations = {param.name: domain(param) for param in job.space.tunable}
            return PopulationBasedTraining(
                hyperparam_mutations=mutations, **{"time_attr": "training_iteration", "perturbation_interval": 2, **options}
            )
        return {"none": FIFOScheduler, "asha": ASHAScheduler, "median": MedianStoppingRule}[name](**options)

    def _search_alg(self, job: SearchJob) -> Any:
        if job.settings.get("search_alg", "basic") == "basic":
            from ray.tune.search.basic_variant import BasicVariantGenerator

            return BasicVariantGenerator(random_state=job.seed)
        from ray.tune.search.optuna import OptunaSearch

        names, modes = job.objectives.names, [d[:3] for d in job.objectives.directions]
        if job.objectives.is_multi:
            return OptunaSearch(metric=names, mode=modes, seed=job.seed)
        return OptunaSearch(seed=job.seed)

    def _start_ray(self, settings: Mapping[str, Any]) -> bool:
        """Connect to ``ray.address`` or start a local runtime; True when this process started it."""
        import ray

        if ray.is_initialized():
            return False
        address = settings.get("address")
        if not address:  # a local runtime serves only this machine: keep it on the loopback interface
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            ray.init(
                address=address or None,
                num_cpus=None if address else settings.get("num_cpus"),
                include_dashboard=False,
                log_to_driver=bool(settings.get("log_to_driver", False)),
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise BackendUnavailableError(
                f"backend.address={address}: cannot connect to the Ray cluster ({first_line(error)}); "
                "check the address or set backend.address=null for a local runtime"
            ) from None
        return True

    def search(self, job: SearchJob) -> None:
        import ray
        from ray import tune

        trainer = job.trainer
        resources = dict(job.settings.get("resources_per_trial") or {"cpu": 1})
        payload = TrialPayload(
            trainer_kwargs={
                "hpsearch_model_init": trainer.hpsearch_model_init,
                "train_dataset": trainer.train_dataset,
                "eval_dataset": trainer.eval_dataset,
                "data_collator": trainer.data_collator,
                "processing_class": trainer.processing_class,
                "args": trainer.args,
            },
            space=job.space,
            objectives=job.objectives,
            report_intermediate=job.settings.get("scheduler", "none") != "none",
            checkpoint_reports=job.settings.get("scheduler") == "pbt",
            threads=max(1, int(resources.get("cpu", 1))),
        )
        started_here = self._start_ray(job.settings)
        try:
            _check_resources(resources)
            job.progress.start(0)
            trainable = tune.with_resources(
                tune.with_parameters(train_trial, payload=payload), resources
            )
            single = not job.objectives.is_multi
            tuner = tune.Tuner(
                trainable,
                param_space=param_space(job.space),
                tune_config=tune.TuneConfig(
                    metric=job.objectives.names[0] if single else None,
                    mode=job.objectives.directions[0][:3] if single else None,
                    num_samples=job.n_trials,
                    max_concurrent_trials=job.settings.get("max_concurrent_trials"),
                    search_alg=self._search_alg(job),
                    scheduler=self._scheduler(job),
                ),
                run_config=tune.RunConfig(
                    name=job.study_name,
                    storage_path=str((job.run_dir / "ray").resolve()),
                    verbose=0,
                    callbacks=[_progress_callback(job)],
                    stop=_failure_stopper(job),
                ),
            )
            self._results = tuner.fit()
        finally:
            if started_here:
                ray.shutdown()

    def records(self, job: SearchJob) -> list[TrialRecord]:
        if self._results is None:
            return []
        records = []
        for number, result in enumerate(self._results):
            metrics = dict(result.metrics or {})
            params = job.space.cast({k: v for k, v in (result.config or {}).items() if k in job.space.names})
            state = "FAIL" if result.error else "COMPLETE" if metrics.get(DONE_FLAG) else "PRUNED"
            records.append(
                TrialRecord(
                    number=number,
                    state=state,
                    values=[float(metrics[n]) for n in job.objectives.names] if state == "COMPLETE" else None,
                    params=params,
                    metrics={k: float(v) for k, v in metrics.items() if k.startswith("eval_") and isinstance(v, (int, float))},
                    duration_s=metrics.get("duration_s") or metrics.get("time_total_s"),
                )
            )
        return records

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        import numpy as np

        random_state = np.random.RandomState(seed)
        domains = param_space(space)
        samples = []
        for _ in range(n):
            raw = {name: d.sample(random_state=random_state) if hasattr(d, "sample") else d for name, d in domains.items()}
            samples.append(space.cast(raw))
        return samples


def _check_resources(resources: Mapping[str, float]) -> None:
    """Tune would wait forever for a trial that asks more than the whole runtime has."""
    import ray

    available = ray.cluster_resources()
    for name, amount in resources.items():
        key = {"cpu": "CPU", "gpu": "GPU", "memory": "memory"}.get(name, name)
        if amount > available.get(key, 0):
            raise ConfigError(
                f"backend.resources_per_trial.{name}={amount}: the Ray runtime has only {available.get(key, 0)}; "
                "lower it, or connect to a cluster that has it with backend.address"
            )


def _outcome_of(trial: Any, job: SearchJob, error: str | None = None) -> TrialOutcome:
    metrics = dict(trial.last_result or {})
    values = [float(metrics[n]) for n in job.objectives.names if n in metrics]
    done = bool(metrics.get(DONE_FLAG)) and error is None
    return TrialOutcome(
        params={k: v for k, v in trial.config.items() if k in job.space.names},
        state="COMPLETE" if done else "FAIL" if error else "PRUNED",
        values=values if done else None,
        metrics={k: v for k, v in metrics.items() if k.startswith("eval_")},
        duration_s=float(metrics.get("time_total_s", 0.0)),
        error=error,
    )


def _progress_callback(job: SearchJob) -> Any:
    """Driver side: feeds finished Ray trials to the listeners the driver's trainer would have called."""
    from ray.tune import Callback

    class ProgressCallback(Callback):
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._tell(_outcome_of(trial, job))

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            self._tell(_outcome_of(trial, job, error=f"Ray trial {trial.trial_id} raised; see {trial.local_path}"))

        @staticmethod
        def _tell(outcome: TrialOutcome) -> None:
            for listener in job.trainer.listeners:  # failure budget, progress, tracking=wandb
                listener(None, outcome)

    return ProgressCallback()


def _failure_stopper(job: SearchJob) -> Any:
    """Stops the whole experiment once more trials failed than ``max_failures`` allows."""
    from ray.tune import Stopper

    class FailureStopper(Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return job.failures.exceeded

    return FailureStopper()
