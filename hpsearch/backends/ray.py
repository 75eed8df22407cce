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
when: {other: values}      ``search_alg=optuna``: OptunaSearch's define-by-run space, optuna's own
                           mapping, so an inactive parameter is never drawn; ``basic``: drawn, and
                           dropped by hpsearch where the condition fails
=========================  ===================================================================

Constraints: a point that breaks a parameter constraint is an errored Ray trial, never trained (the search
draws again, in a further experiment); outcome constraints are reported with each trial (``constraint_<name>``),
and best and Pareto trials are feasible ones. ``warm_start`` points are the searcher's ``points_to_evaluate``.

The experiment lives in ``<storage_dir>/ray/<study_name>`` (linked as ``<run_dir>/ray``), so rerunning the same
command restores it and runs only the trials still missing (unfinished ones start again). A Ray experiment cannot
grow, so failed trials and a raised ``n_trials`` are made up by a further experiment (``<study_name>+1``, ...),
reseeded, and with ``search_alg=optuna`` told the earlier results. A local runtime listens on 127.0.0.1 only, with
Ray's token authentication on (Ray's token, ``~/.ray/auth_token``, which hpsearch creates once if missing); its
session files go to a private temp folder, removed afterwards. ``backend.address`` joins a cluster exactly as the
user configured it. Schedulers (ASHA, median stopping, PBT) need in-training evaluation; under PBT every
in-training evaluation also saves a checkpoint (transformers' Ray layout), an exploited trial resumes from its
donor's checkpoint with its own, perturbed hyperparameters (the restored learning-rate schedule is rebased onto the
new rate), and only parameters that act during training make sense to mutate.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.backends.base import Backend, SamplesNatively, SearchJob, method_name, require_in_training_eval
from hpsearch.errors import BackendUnavailableError, ConfigError, TrialFailed, first_line
from hpsearch.objective import Objectives
from hpsearch.settings import Settings
from hpsearch.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, SearchSpace
from hpsearch.trials import TrialOutcome, TrialRecord, TrialState, count_finished, stored_trial
from hpsearch.warm_start import pending_points

if TYPE_CHECKING:
    from hpsearch.loop import TrialLoop

log = logging.getLogger(__name__)

SCHEDULERS = ("none", "asha", "median", "pbt")
SEARCH_ALGORITHMS = ("basic", "optuna")
MODES = {"maximize": "max", "minimize": "min"}  # an objective's direction as Ray's ``mode``
CONNECT_TIMEOUT_S = 10  # for backend.address's port to accept a connection
DONE_FLAG = "hpsearch_done"  # set in a trial's final report; a trial stopped early by a scheduler lacks it


@dataclass(frozen=True)
class RaySettings(Settings):
    """``conf/backend/ray.yaml``."""

    address: str | None
    num_cpus: int | None
    resources_per_trial: dict[str, float]
    max_concurrent_trials: int | None
    search_alg: str
    scheduler: str
    scheduler_kwargs: dict[str, Any]
    log_to_driver: bool


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


def _told(job: SearchJob[RaySettings], earlier: list[TrialRecord]) -> list[TrialRecord]:
    """The earlier trials OptunaSearch can be told: complete ones with a value for every parameter (Ray checks
    each told point against its whole space)."""
    return [r for r in earlier if r.is_complete and all(p.name in r.params for p in job.space.tunable)]


def _defines_by_run(job: SearchJob[RaySettings], earlier: list[TrialRecord]) -> bool:
    """OptunaSearch defines the space by run (optuna's own ``suggest``) for conditional parameters and partial
    warm-start points; not once told earlier results, which Ray takes only with a space of distributions (a
    conditional parameter is then drawn, and dropped)."""
    wanted = bool(job.space.conditions) or bool(pending_points(job.warm_start, earlier))
    return job.settings.search_alg == "optuna" and wanted and not _told(job, earlier)


def _define_by_run(space: SearchSpace, trial: Any) -> dict[str, Any]:
    """OptunaSearch's define-by-run space (conditional parameters, partial warm-start points): optuna's own
    mapping suggests each active parameter, parents first; the fixed values come back as Ray's constants."""
    from hpsearch.backends.optuna.space import suggest

    values = suggest(trial, space)
    return {param.name: values[param.name] for param in space if isinstance(param, FixedParam) and param.name in values}


@dataclass
class TrialPayload:
    """Everything a Ray worker needs to train trials; shipped once through the object store."""

    trainer_kwargs: dict[str, Any]
    trainer_base: type  # the configured Trainer class (trainer._target_), importable where Ray unpickles it
    space: SearchSpace
    objectives: Objectives
    report_intermediate: bool
    checkpoint_reports: bool  # PBT copies checkpoints between trials
    threads: int

    def trainer(self) -> Any:
        import torch
        from transformers import PrinterCallback

        from hpsearch.trainer import search_trainer_class

        torch.set_num_threads(self.threads)  # one trial per reserved CPU, not one per core
        trainer_class = search_trainer_class(self.trainer_base)
        trainer = trainer_class(space=self.space, objectives=self.objectives, **self.trainer_kwargs)
        trainer.remove_callback(PrinterCallback)
        return trainer


def _final_report(outcome: TrialOutcome, objectives: Objectives) -> dict[str, Any]:
    values = dict(zip(objectives.names, outcome.values or [], strict=False))
    return {**outcome.metrics, **values, "duration_s": outcome.duration_s, DONE_FLAG: True}


def train_trial(config: dict[str, Any], payload: TrialPayload) -> None:
    """The Ray Tune function trainable: runs in a Ray worker."""
    from ray import tune

    trainer = payload.trainer()
    if payload.report_intermediate:
        trainer.reporter = lambda handle, step, metrics: _report(trainer, step, metrics, payload.checkpoint_reports)
    outcome = trainer.run_trial(payload.space.cast(config), resume_from_checkpoint=_restored_checkpoint())
    if outcome.state is TrialState.FAIL:
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


class RayBackend(Backend[RaySettings], SamplesNatively):
    name = "ray"
    settings_type = RaySettings
    package = "ray[tune]"
    extra = "ray"
    runs_under_torchrun = False
    runs_own_workers = True  # workers=N: N concurrent Ray trials in Ray's own, reused, worker processes
    torchrun_hint = (
        "Ray starts its own workers, so it does not run under torchrun; run 'python -m hpsearch backend=ray' "
        "and give each trial devices with backend.resources_per_trial"
    )

    def validate(self, settings: RaySettings, objectives: Objectives, training: Mapping[str, Any]) -> None:
        self.require("ray.tune")
        scheduler, algorithm = settings.scheduler, settings.search_alg
        if scheduler not in SCHEDULERS:
            raise ConfigError(f"backend.scheduler: unknown scheduler {scheduler!r}; choose one of {list(SCHEDULERS)}")
        if algorithm not in SEARCH_ALGORITHMS:
            raise ConfigError(f"backend.search_alg: unknown {algorithm!r}; choose one of {list(SEARCH_ALGORITHMS)}")
        if scheduler != "none":
            if objectives.is_multi:
                raise ConfigError(
                    f"backend.scheduler={scheduler}: Ray schedulers stop trials on one metric; set backend.scheduler=none"
                )
            require_in_training_eval(f"backend.scheduler={scheduler}", training, "early stopping")
        if objectives.is_multi and algorithm != "optuna":
            raise ConfigError("backend.search_alg: several objectives need search_alg=optuna (OptunaSearch)")

    def _scheduler(self, job: SearchJob[RaySettings]) -> Any:
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule, PopulationBasedTraining

        options = dict(job.settings.scheduler_kwargs)
        name = job.settings.scheduler
        if name == "pbt":  # explores around the same domains the trials were drawn from
            mutations = {param.name: domain(param) for param in job.space.tunable}
            return PopulationBasedTraining(
                hyperparam_mutations=mutations,
                **{"time_attr": "training_iteration", "perturbation_interval": 2, **options},
            )
        return {"none": FIFOScheduler, "asha": ASHAScheduler, "median": MedianStoppingRule}[name](**options)

    def _search_alg(self, job: SearchJob[RaySettings], earlier: list[TrialRecord]) -> Any:
        """A fresh search algorithm; after ``earlier`` trials, reseeded so it does not replay their draws, and
        OptunaSearch told their results (Ray's random variants learn from none). The warm-start points not yet
        trained come first, as ``points_to_evaluate``."""
        seed = job.seed + len(earlier)
        warm = pending_points(job.warm_start, earlier)
        if job.settings.search_alg == "basic":
            from ray.tune.search.basic_variant import BasicVariantGenerator

            return BasicVariantGenerator(random_state=seed, points_to_evaluate=warm or None)
        from ray.tune.search.optuna import OptunaSearch

        options: dict[str, Any] = {"seed": seed}
        if complete := _told(job, earlier):  # rewards for every point or none: untried warm ones are left out
            options["points_to_evaluate"] = [dict(record.params) for record in complete]
            options["evaluated_rewards"] = [
                record.complete_values[0] if not job.objectives.is_multi else list(record.complete_values)
                for record in complete
            ]
        elif warm:
            options["points_to_evaluate"] = warm
        names, modes = job.objectives.names, [MODES[d] for d in job.objectives.directions]
        by_run = _defines_by_run(job, earlier)
        if by_run:  # Tune then hands the searcher no space, nor its metric and mode
            options["space"] = functools.partial(_define_by_run, job.space)
        if job.objectives.is_multi:
            options.update(metric=names, mode=modes)
        elif by_run:
            options.update(metric=names[0], mode=modes[0])
        return OptunaSearch(**options)

    @contextmanager
    def _ray_runtime(self, settings: RaySettings) -> Iterator[None]:
        """Connect to ``backend.address``, or start a local runtime for this search and stop it afterwards."""
        import ray

        if ray.is_initialized():
            yield
            return
        address = settings.address
        temp_dir = None
        if not address:
            # A local runtime serves only this machine: loopback only, token authentication, private files.
            # Ray's gRPC servers listen on every interface whatever the node address, so token authentication
            # must be on: with RAY_AUTH_MODE unset, ray.init turns it on for a new local runtime, with the token
            # (~/.ray/auth_token) that _create_auth_token_once has made sure exists.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            os.environ.pop("RAY_AUTH_MODE", None)
            _create_auth_token_once()
            temp_dir = tempfile.mkdtemp(prefix="hpsearch-ray-", dir=_short_temp_root())
        else:
            _check_reachable(address)
        try:
            ray.init(
                address=address or None,
                num_cpus=None if address else settings.num_cpus,
                include_dashboard=False,
                log_to_driver=settings.log_to_driver,
                configure_logging=False,
                _node_ip_address=None if address else "127.0.0.1",
                _temp_dir=temp_dir,
            )
        except Exception as error:  # noqa: BLE001 - a local node that does not start is a bare Exception
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)
            if address:
                raise _unreachable(address, first_line(error)) from None
            raise BackendUnavailableError(
                f"backend.address=null: Ray's local runtime did not start ({first_line(error)}); run the search "
                "again, or start a cluster with `ray start --head` and set backend.address to it"
            ) from None
        try:
            yield
        finally:
            ray.shutdown()
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)

    def method(self, settings: RaySettings) -> str:
        return method_name(settings.search_alg, settings.scheduler)

    def prepare(self, job: SearchJob[RaySettings]) -> None:
        """Nothing to create ahead: Ray's experiment folder is written by its first fit, and restored after."""

    def search(self, job: SearchJob[RaySettings], loop: TrialLoop) -> None:
        """Ray Tune schedules the trials itself, in its own worker processes; the driver records each one."""
        from ray import tune

        trainer = loop.trainer
        packed = {"cpu": 1, "gpu": 1 / job.workers_per_gpu} if job.workers_per_gpu else {"cpu": 1}  # workers=auto
        resources = dict(job.settings.resources_per_trial or packed)
        payload = TrialPayload(
            trainer_kwargs={
                "hpsearch_model_init": trainer.hpsearch_model_init,
                "train_dataset": trainer.train_dataset,
                "eval_dataset": trainer.eval_dataset,
                "data_collator": trainer.data_collator,
                "processing_class": trainer.processing_class,
                "args": trainer.args,
                "compute_metrics": trainer.compute_metrics,
                "best_model": trainer.best_model,
            },
            trainer_base=trainer.hpsearch_base,
            space=job.space,
            objectives=job.objectives,
            report_intermediate=job.settings.scheduler != "none",
            checkpoint_reports=job.settings.scheduler == "pbt",
            threads=max(1, int(resources.get("cpu", 1))),
        )
        # Snapshot the experiment every second, so a killed search resumes from nearly where it stopped.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
        experiments = self._experiments(job)
        global _driver
        with self._ray_runtime(job.settings):
            _check_resources(resources)
            trainable = tune.with_resources(tune.with_parameters(train_trial, payload=payload), resources)
            if experiments:  # the latest one may have been stopped midway: finish it first
                _driver = (job, loop, len(self._records(job, experiments[:-1])))
                tune.Tuner.restore(
                    str(experiments[-1]), trainable=trainable, resume_unfinished=True, resume_errored=False
                ).fit()
            # A Ray experiment cannot grow: failed trials, or a raised n_trials, get an experiment of their own.
            # Each one finishes or fails a trial at least, so the failure budget bounds this loop.
            while not loop.stopped and (missing := job.n_trials - count_finished(records := self.records(job))) > 0:
                experiment = self._experiment(job, len(experiments))
                experiments.append(experiment)
                if records:
                    log.info(
                        "backend=ray: %d more trials for n_trials=%d, as Ray experiment %s%s",
                        missing,
                        job.n_trials,
                        experiment.name,
                        ", its search told the earlier results" if job.settings.search_alg == "optuna" else "",
                    )
                _driver = (job, loop, len(records))
                self._new_tuner(job, trainable, experiment, missing, records).fit()
                if not self._records(job, [experiment]):
                    break  # Ray ran no trial at all: nothing more will come of another try

    def _experiment(self, job: SearchJob[RaySettings], index: int = 0) -> Path:
        """The study's ``index``-th Ray experiment: ``<study_name>``, then ``<study_name>+1``, ..."""
        return self.keep_with_study(job, "ray") / (job.study_name if index == 0 else f"{job.study_name}+{index}")

    def _experiments(self, job: SearchJob[RaySettings]) -> list[Path]:
        """The study's Ray experiments written so far, oldest first."""
        experiments: list[Path] = []
        while any((next_one := self._experiment(job, len(experiments))).glob("experiment_state-*.json")):
            experiments.append(next_one)
        return experiments

    def _new_tuner(
        self, job: SearchJob[RaySettings], trainable: Any, experiment: Path, trials: int, earlier: list[TrialRecord]
    ) -> Any:
        from ray import tune

        single = not job.objectives.is_multi
        return tune.Tuner(
            trainable,
            param_space=self._param_space(job, earlier),
            tune_config=tune.TuneConfig(
                metric=job.objectives.names[0] if single else None,
                mode=MODES[job.objectives.directions[0]] if single else None,
                num_samples=trials,
                max_concurrent_trials=job.settings.max_concurrent_trials or (job.workers if job.workers > 1 else None),
                reuse_actors=True,  # a Ray worker process trains trial after trial
                search_alg=self._search_alg(job, earlier),
                scheduler=self._scheduler(job),
            ),
            run_config=tune.RunConfig(
                name=experiment.name,
                storage_path=str(experiment.parent),
                verbose=0,
                callbacks=[_progress_callback()],
                stop=_failure_stopper(),
            ),
        )

    def _param_space(self, job: SearchJob[RaySettings], earlier: list[TrialRecord]) -> dict[str, Any]:
        """Tune's search space; none where OptunaSearch defines the space by run (``_define_by_run``)."""
        return {} if _defines_by_run(job, earlier) else param_space(job.space)

    def records(self, job: SearchJob[RaySettings]) -> list[TrialRecord]:
        """Read back from the experiments' files, in the order Ray created the trials."""
        return self._records(job, self._experiments(job))

    def _records(self, job: SearchJob[RaySettings], experiments: list[Path]) -> list[TrialRecord]:
        from ray.tune import ExperimentAnalysis

        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # trials yet to report
        trials = [
            trial
            for experiment in experiments
            for trial in sorted(ExperimentAnalysis(str(experiment)).trials, key=_creation_order)
        ]
        return [_trial_record(number, trial, job) for number, trial in enumerate(trials)]

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        import numpy as np

        random_state = np.random.RandomState(seed)
        domains = param_space(space)
        samples = []
        for _ in range(n):
            raw = {
                name: d.sample(random_state=random_state) if hasattr(d, "sample") else d for name, d in domains.items()
            }
            samples.append(space.cast(raw))
        return samples


def _create_auth_token_once() -> None:
    """Create Ray's default token file unless one exists or the environment names another. Ray itself writes
    it in place on a new local runtime's first start, so two searches starting at once on a fresh machine would
    each write their own, and the runtime started with the overwritten one would refuse its own workers."""
    path = Path.home() / ".ray" / "auth_token"
    if path.exists() or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, draft = tempfile.mkstemp(dir=path.parent, prefix=".auth_token-")  # private: mode 0600
    try:
        with os.fdopen(handle, "w") as token:
            token.write(secrets.token_hex(32))  # as Ray's own: 256 random bits
        os.link(draft, path)  # atomic, and refused where another search got there first: its token stands
    except FileExistsError:
        pass
    finally:
        os.unlink(draft)


def _unreachable(address: str, why: str) -> BackendUnavailableError:
    return BackendUnavailableError(
        f"backend.address={address}: cannot connect to the Ray cluster ({why}); "
        "check the address or set backend.address=null for a local runtime"
    )


def _check_reachable(address: str) -> None:
    """ray.init retries an address where nothing listens for many minutes: try its port once first."""
    host, separator, port = address.removeprefix("ray://").rpartition(":")
    if not separator or not port.isdigit():  # "auto", or an address only Ray knows how to read
        return
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise _unreachable(address, f"nothing answers at {host}:{port}: {error.strerror or error}") from None


def _short_temp_root() -> str:
    """Ray's unix sockets live in its temp folder, and their paths may not exceed 107 bytes."""
    root = tempfile.gettempdir()
    return root if len(root) <= 40 else "/tmp"


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


def _trial_record(
    number: int, trial: Any, job: SearchJob[RaySettings], ended: bool = False, error: str | None = None
) -> TrialRecord:
    """A Ray trial as hpsearch records it; ``ended``: Ray just reported it done (a scheduler may have stopped it)."""
    metrics = dict(trial.last_result or {})
    if error is not None or trial.status == "ERROR":
        state, error = TrialState.FAIL, _error_line(trial) or error
    elif metrics.get(DONE_FLAG):
        state = TrialState.COMPLETE
    else:  # stopped early by a scheduler, or not finished yet
        state = TrialState.PRUNED if ended or trial.status == "TERMINATED" else TrialState.RUNNING
    return stored_trial(
        number=number,
        state=state,
        params=job.space.read(trial.config or {}),
        reported=metrics,
        values=[float(metrics[n]) for n in job.objectives.names] if state is TrialState.COMPLETE else None,
        duration_s=metrics.get("duration_s") or metrics.get("time_total_s"),
        error=error,
        key=trial.trial_id,
        finished_at=metrics.get("timestamp"),
    )


def _creation_order(trial: Any) -> int:
    """ExperimentAnalysis lists an experiment's trials in no set order; Tune starts each trial's tag with a
    counter (``3_learning_rate=...``), whatever made its id (a searcher's ids are random)."""
    counter = str(trial.experiment_tag).split("_", 1)[0]
    return int(counter) if counter.isdigit() else 0


def _error_line(trial: Any) -> str | None:
    """The exception a failed Ray trial raised, as the last line of the traceback Ray kept for it (read from the
    trial's stored folder: ``trial.error_file`` is a staging path that needs a running Ray)."""
    name = trial.run_metadata.error_filename
    path = Path(trial.path, name) if name and trial.path else None
    if path is None or not path.is_file():
        return None
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    return lines[-1].removeprefix(f"{TrialFailed.__module__}.{TrialFailed.__name__}: ")[:300] if lines else None


# The search this driver process runs, and the trials of the study's earlier Ray experiments.
_driver: tuple[SearchJob[RaySettings], TrialLoop, int] | None = None


class _DriverOnly:
    """Ray pickles the run config, callbacks included, into the experiment and restores it on resume; the
    callbacks hold no state and find this process's search and trial loop here."""

    @property
    def driver(self) -> tuple[SearchJob[RaySettings], TrialLoop, int]:
        assert _driver is not None
        return _driver


def _progress_callback() -> Any:
    """Driver side: records each finished Ray trial in the shared trial loop."""
    from ray.tune import Callback

    class ProgressCallback(_DriverOnly, Callback):
        def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            job, loop, earlier = self.driver
            loop.record(_trial_record(earlier + trials.index(trial), trial, job, ended=True))  # failures, progress

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            job, loop, earlier = self.driver
            error = f"Ray trial {trial.trial_id} raised; see {trial.local_path}"
            loop.record(_trial_record(earlier + trials.index(trial), trial, job, error=error))

    return ProgressCallback()


def _failure_stopper() -> Any:
    """Stops the whole experiment once more trials failed than ``max_failures`` allows."""
    from ray.tune import Stopper

    class FailureStopper(_DriverOnly, Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return self.driver[1].stopped

    return FailureStopper()
