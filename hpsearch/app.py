"""``run(cfg)``: one hyperparameter search from a composed config. Pure: no argv, no sys.exit.

``run`` validates the config, then runs the search in the mode this process is in; each mode is one function
below. The backend's lifecycle is the orchestrator's (``hpsearch.orchestrator``), building the model, data and
trainer is ``hpsearch.build``'s, and the worker pool is ``hpsearch.workers``'.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from hpsearch.backends import backend_settings, get_backend
from hpsearch.backends.base import Backend, SearchJob, require_in_training_eval
from hpsearch.budget import BUDGET_ENV, TrialBudget, worker_budget
from hpsearch.build import TrainerParts, build_trainer, build_trainer_from, trainer_target
from hpsearch.config import check_top_level_key, plain, redacted, save_resolved, top_level_keys
from hpsearch.definition import DEFINING_KEYS
from hpsearch.distributed import Coordinator, Decision, Message, RankReport, rank, world_size
from hpsearch.errors import (
    EXIT_INTERRUPTED,
    CollectiveTimeout,
    ConfigError,
    HPSearchError,
    SearchAborted,
    SearchIncomplete,
)
from hpsearch.interrupt import handle_interrupts
from hpsearch.loop import FailureBudget, Listener, TrialLoop
from hpsearch.objective import Objectives
from hpsearch.orchestrator import Orchestrator
from hpsearch.packing import (
    AUTO,
    PACKING_JSON,
    PackingSettings,
    apply_memory_cap,
    release_cached_memory,
    share_environment,
)
from hpsearch.packing import Decision as PackingDecision
from hpsearch.peft import AdapterSettings, check_adapter_space
from hpsearch.probe import ProbePool, ProbeProcess, measure, probe_capacity, probe_environment
from hpsearch.probe import report_error as report_probe_error
from hpsearch.probe import serve as serve_probe
from hpsearch.progress import SearchProgress
from hpsearch.rerun import rerun_space
from hpsearch.space import SearchSpace
from hpsearch.tracking import get_tracker
from hpsearch.tracking.base import Tracker
from hpsearch.trials import SearchResult, TrialOutcome, TrialState, count_finished
from hpsearch.warm_start import warm_start_points
from hpsearch.workers import (
    Supervision,
    WorkerReport,
    enter_environment,
    run_workers,
    visible_gpus,
    worker_count,
    worker_error_file,
    worker_index,
)


def run(cfg: DictConfig, parts: TrainerParts | None = None) -> SearchResult | None:
    """Validate the config, then run the search as this process's part of it; the result where this process
    owns the search (None in a worker process or on a DDP rank other than zero). ``parts``: the pieces of a
    user's Trainer (``hpsearch.search``), used instead of the config's model and data."""
    plan = Plan.from_config(cfg, parts)
    if cfg.get("results_only"):
        return write_results_only(plan)
    if worker_index() is not None:
        work_in_pool(plan)
        return None
    if rank() != 0:
        follow_rank_zero(plan)
        return None
    if plan.packing is not None:
        return search_packed(plan)
    return search_on_workers(plan)


def search_on_workers(plan: Plan, ready: Sequence[ProbeProcess] = ()) -> SearchResult:
    """The search on ``plan.job.workers`` processes: a pool of them, or this one (Ray runs its own). ``ready``:
    the kept probes of ``workers=auto``, which become the pool's first workers (a pool of one included)."""
    if (plan.job.workers > 1 or ready) and not plan.backend.runs_own_workers:
        return launch_workers(plan, ready)
    return search_here(plan)


def search_packed(plan: Plan) -> SearchResult:
    """``workers=auto``: probe what one trial needs and what more workers gain, decide, then search that way, the
    kept probes going on as workers."""
    assert plan.packing is not None
    gpus = visible_gpus()
    probe_config = {**plain(plan.cfg), "workers": 1, "workers_per_gpu": None, "save_best_model": False}
    target: Any = _probe
    if plan.parts is not None:  # hpsearch.search: each probe process gets the user's trainer's parts
        plan.parts.check_sendable("workers=auto")
        target = functools.partial(_probe, parts=plan.parts)
    trials_left = plan.job.n_trials  # an upper bound: the study's finished trials are known after prepare
    environment, cores = probe_environment(gpus, os.cpu_count() or 1)
    with closing(ProbePool(target, probe_config, environment, cores)) as pool:
        capacity, decision = probe_capacity(pool, plan.packing, gpus, trials_left)
        print(f"hpsearch: {decision.line(capacity, len(gpus))}", file=sys.stderr)
        plan.job.run_dir.mkdir(parents=True, exist_ok=True)
        (plan.job.run_dir / PACKING_JSON).write_text(json.dumps(decision.record(capacity, len(gpus)), indent=2))
        # Ray starts its own trial processes: every probe goes
        ready = pool.hand_over(0 if plan.backend.runs_own_workers else decision.per_device)
        with tempfile.TemporaryDirectory(prefix="hpsearch-packing-") as folder:  # the device locks, nothing kept
            return search_on_workers(plan.packed(decision, len(gpus), Path(folder)), ready)


@dataclass(frozen=True)
class Plan:
    """A validated search: what every mode starts from, checked before any model or data is loaded."""

    cfg: DictConfig
    backend: Backend[Any]
    job: SearchJob[Any]
    training: dict[str, Any]
    max_failures: int
    max_worker_restarts: int
    adapter: AdapterSettings | None = None  # peft=lora
    parts: TrainerParts | None = None  # hpsearch.search: the user's Trainer instead of the config's model and data
    packing: PackingSettings | None = None  # workers=auto, until decided
    share_environment: Mapping[str, str] = field(default_factory=dict)  # decided: each packed worker's share

    @classmethod
    def from_config(cls, cfg: DictConfig, parts: TrainerParts | None = None) -> Plan:
        known = top_level_keys()
        for key in cfg:
            check_top_level_key(str(key), known)
        rerun = bool(cfg.get("rerun"))
        n_trials = 1 if rerun else _integer(cfg, "n_trials", 1)
        space = SearchSpace.from_config(plain(cfg.space), plain(cfg.constraints) if cfg.get("constraints") else {})
        adapter = AdapterSettings.from_config(plain(cfg.peft) if "peft" in cfg else {})
        check_adapter_space(space, adapter)
        objectives = Objectives.from_config(plain(cfg.objective))
        if parts is None and "_target_" not in cfg.data:  # a task of its own names its metrics once built
            objectives.check_reachable()
        backend = get_backend(str(cfg.backend.name))
        settings = backend_settings(backend, plain(cfg.backend))
        training = plain(cfg.training)
        backend.validate(settings, objectives, training)
        if cfg.get("save_best_model") and objectives.is_multi and not rerun:
            raise ConfigError(
                "save_best_model: a Pareto search has no single best trial; to keep a front trial's model, write its "
                "hyperparameters from pareto.json to a YAML file and train it with rerun=FILE save_best_model=true"
            )
        # transformers' Trainer and TrainingArguments: imported on first use
        from hpsearch.trainer import trainer_class
        from hpsearch.training import arguments_class, check_training

        # hpsearch.search: the user's own class, which a script or notebook may define where no import finds it
        arguments = arguments_class(parts.trainer_class if parts is not None else trainer_class(trainer_target(cfg)))
        check_training(training, space, arguments)  # before anything loads or the study is created
        if objectives.select == "best":
            require_in_training_eval("objective.select=best", training, "taking the best evaluation")
        run_dir = Path(cfg.run_dir)
        job = SearchJob(
            space=rerun_space(space, Path(cfg.rerun)) if rerun else space,
            objectives=objectives,
            n_trials=n_trials,
            seed=_integer(cfg, "seed", 0),
            study_name=str(cfg.study_name) + ("-rerun" if rerun else ""),
            # a re-run is one fresh trial, never a resume of the search's own study
            storage=None if rerun else cfg.get("storage"),
            state_dir=(run_dir / "rerun-state").resolve() if rerun else Path(cfg.storage_dir).expanduser().resolve(),
            run_dir=run_dir,
            settings=settings,
            workers=_workers(cfg),
            definition=redacted({key: plain(cfg[key]) if cfg.get(key) else {} for key in DEFINING_KEYS}),
        )
        if not rerun and cfg.get("warm_start"):
            job = dataclasses.replace(job, warm_start=warm_start_points(plain(cfg.warm_start), backend, job))
        return cls(
            cfg,
            backend,
            job,
            training,
            _integer(cfg, "max_failures", 0),
            _integer(cfg, "max_worker_restarts", 0),
            adapter,
            parts,
            _packing(cfg) if _is_auto(cfg) else None,
        )

    def packed(self, decision: PackingDecision, gpus: int, locks: Path) -> Plan:
        """The plan with ``workers=auto`` decided: that many workers (per GPU, with GPUs), each with its share."""
        workers = decision.per_device * max(1, gpus)
        cfg = self.cfg.copy()
        with open_dict(cfg):  # what the workers are started with: the decided count, never auto again
            cfg.workers, cfg.workers_per_gpu = workers, None
        job = dataclasses.replace(self.job, workers=workers, workers_per_gpu=decision.per_device if gpus else None)
        return dataclasses.replace(
            self, cfg=cfg, job=job, packing=None, share_environment=share_environment(locks, decision)
        )

    @property
    def orchestrator(self) -> Orchestrator:
        return Orchestrator(self.backend, self.job)

    def trainer(self, coordinator: Coordinator | None = None) -> Any:
        job = self.job
        if self.parts is not None:
            return build_trainer_from(
                self.parts,
                job.space,
                job.objectives,
                job.run_dir,
                job.seed,
                coordinator,
                self.adapter,
                bool(self.cfg.get("save_best_model")),
            )
        return build_trainer(
            self.cfg, self.training, job.space, job.objectives, job.run_dir, job.seed, coordinator, self.adapter
        )

    def progress(self) -> SearchProgress:
        return SearchProgress(self.job.n_trials, self.job.objectives, enabled=self.cfg.get("progress", True))

    def save_config(self) -> None:
        save_resolved(self.cfg, self.job.run_dir / "config.yaml")


def write_results_only(plan: Plan) -> SearchResult:
    """``results_only=true``, or a study already done: the results files of the study as it stands."""
    plan.save_config()
    result = plan.orchestrator.write_results()
    _report(result, plan.job)
    return result


def search_here(plan: Plan) -> SearchResult:
    """One process trains the trials; under torchrun this is rank zero, and the other ranks follow it."""
    orchestrator, job = plan.orchestrator, plan.job
    coordinator = _coordinator(plan)
    os.environ.update(plan.share_environment)  # packed Ray trials: the processes Ray starts inherit it
    trainer = plan.trainer(coordinator)  # model and data first: a run that fails here leaves no study behind
    finished = orchestrator.prepare()
    if world_size() == 1 and orchestrator.is_done(finished):  # under DDP the other ranks wait for rank zero
        return write_results_only(plan)
    plan.save_config()
    tracker = _tracker(plan)
    failures, progress = FailureBudget(plan.max_failures), plan.progress()
    trainer.add_callback(progress.trial_callback())
    loop = TrialLoop(trainer, job.n_trials, progress, failures, [tracker] if tracker else [])
    try:
        with _long_lived_frozen():
            orchestrator.search(loop, finished)
    except CollectiveTimeout:
        coordinator = None  # the other ranks are gone: nobody to tell
        raise
    finally:
        progress.close()
        if coordinator is not None:
            coordinator.decide(Message(Decision.STOP))
            coordinator.close()
        if trainer.rank_reports:
            _write_rank_reports(job.run_dir, trainer.rank_reports)
        result = orchestrator.write_results()
    if tracker is not None:
        tracker.finish(result)
    return _conclude(result, failures, job)


def launch_workers(plan: Plan, ready: Sequence[ProbeProcess] = ()) -> SearchResult:
    """``workers=N``: prepare the study, start N worker processes on it (or make ``ready`` ones its workers), show
    its progress, write its results."""
    orchestrator, job, backend = plan.orchestrator, plan.job, plan.backend
    target: Any = _start_worker
    if plan.parts is not None:  # hpsearch.search: each worker process gets the user's trainer's parts
        plan.parts.check_sendable(f"workers={job.workers}")
        target = functools.partial(_start_worker, parts=plan.parts)
    finished = orchestrator.prepare()
    if orchestrator.is_done(finished):
        return write_results_only(plan)
    plan.save_config()
    failures, progress = FailureBudget(plan.max_failures), plan.progress()

    def record(outcome: TrialOutcome) -> None:
        failures(outcome)
        progress(outcome)

    supervision = Supervision(
        read_records=lambda: backend.records(job),
        record=record,
        abandon=lambda pid: backend.abandon(job, pid),
        stopped=lambda: failures.exceeded,
    )
    progress.start(finished)
    try:
        with tempfile.TemporaryDirectory(prefix="hpsearch-budget-") as folder:  # the workers' claims, nothing kept
            budget = TrialBudget.create(Path(folder) / "budget.json", max(0, job.n_trials - finished))
            run_workers(
                target,
                plain(plan.cfg),
                job.workers,
                budget,
                supervision,
                plan.max_worker_restarts,
                plan.share_environment,
                ready,
            )
    finally:
        progress.close()
        result = orchestrator.write_results()
    return _conclude(result, failures, job)


def work_in_pool(plan: Plan) -> None:
    """A worker process of ``workers=N``: train trials of the launcher's study until the shared budget is spent."""
    tracker = _tracker(plan)
    listeners: list[Listener] = [*([tracker] if tracker else []), WorkerReport(plan.job.run_dir)]
    progress = SearchProgress(plan.job.n_trials, plan.job.objectives, enabled=False)  # the launcher shows it
    loop = TrialLoop(
        plan.trainer(), plan.job.n_trials, progress, FailureBudget(plan.max_failures), listeners, worker_budget()
    )
    with _long_lived_frozen():
        plan.orchestrator.search(loop, plan.orchestrator.finished_trials())


def follow_rank_zero(plan: Plan) -> None:
    """A DDP rank other than zero: train whatever rank zero decides until it says stop."""
    coordinator = _coordinator(plan)
    assert coordinator is not None
    trainer = plan.trainer(coordinator)
    while (message := coordinator.decide()).decision is Decision.TRIAL:
        trainer.run_trial(message.params)
    coordinator.close()


def _start_worker(config: dict[str, Any], environment: dict[str, str], parts: TrainerParts | None = None) -> None:
    """The target of each worker process: the same search, as a worker."""
    enter_environment(environment)
    apply_memory_cap()  # a packed GPU worker: before anything allocates on the card
    handle_interrupts()  # the launcher stops its workers with SIGTERM: each fails its running trial first
    try:
        run(OmegaConf.create(config), parts)
    except HPSearchError as error:  # the launcher reports it, once, and ends the search with its exit code
        report = {"message": str(error), "exit_code": error.exit_code}
        worker_error_file(Path(environment[BUDGET_ENV]), os.getpid()).write_text(json.dumps(report))
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


def _probe(
    config: dict[str, Any], environment: dict[str, str], connection: Any, parts: TrainerParts | None = None
) -> None:
    """The target of each probe process of ``workers=auto``: measure whenever the launcher asks, then go on as a
    worker if it is kept."""
    enter_environment(environment)
    try:
        kept = _measure_when_asked(OmegaConf.create(config), connection, parts)
    except HPSearchError as error:
        report_probe_error(connection, str(error), error.exit_code)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the launcher reports it
        sys.exit(EXIT_INTERRUPTED)
    connection.close()
    gc.collect()  # the probe's trainer went with its frame; the worker builds its own, from its own config
    release_cached_memory()
    if kept is not None:
        _start_worker(*kept, parts=parts)


def _measure_when_asked(
    cfg: DictConfig, connection: Any, parts: TrainerParts | None
) -> tuple[dict[str, Any], dict[str, str]] | None:
    """In a probe process: build the trainer once, then train the space's most demanding point for the timed
    steps each time the launcher asks; the worker's config and environment if this probe is kept."""
    plan = Plan.from_config(cfg, parts)
    trainer = plan.trainer()
    point, steps = plan.job.space.most_demanding(), _packing(plan.cfg).probe_steps
    return serve_probe(connection, lambda: measure(trainer, point, steps))


def _integer(cfg: DictConfig, key: str, minimum: int) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum} (got {value!r})")
    return value


def _packing(cfg: DictConfig) -> PackingSettings:
    return PackingSettings.from_config(plain(cfg.packing) if "packing" in cfg else {})


def _is_auto(cfg: DictConfig) -> bool:
    return AUTO in (cfg.get("workers"), cfg.get("workers_per_gpu"))


def _workers(cfg: DictConfig) -> int:
    """``workers``, or ``workers_per_gpu`` times this machine's GPUs (1 until ``auto`` is decided); a clear error
    for bad values."""
    workers, per_gpu = cfg.get("workers"), cfg.get("workers_per_gpu")
    if _is_auto(cfg):
        if {workers, per_gpu} not in ({AUTO}, {AUTO, None}):
            raise ConfigError(
                f"workers={workers} workers_per_gpu={per_gpu}: with auto, hpsearch picks both; set the other to null"
            )
        if world_size() > 1:
            raise ConfigError("workers=auto: torchrun already runs one process per device; drop it under torchrun")
        return 1
    for key, value in (("workers", workers), ("workers_per_gpu", per_gpu)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{key}: must be an integer >= 1, auto or null (got {value!r})")
    count = worker_count(workers, per_gpu, visible_gpus() if per_gpu is not None else [])
    if count > 1 and world_size() > 1:
        raise ConfigError(
            f"workers={count}: torchrun already runs one process per device; drop workers or run without torchrun"
        )
    return count


def _coordinator(plan: Plan) -> Coordinator | None:
    """The DDP control channel under torchrun (WORLD_SIZE > 1), else None."""
    if world_size() <= 1:
        return None
    if not plan.backend.runs_under_torchrun:
        raise ConfigError(f"backend={plan.backend.name}: {plan.backend.torchrun_hint}")
    import torch

    training = plan.training
    if not torch.cuda.is_available():
        # transformers wraps the model in DistributedDataParallel on CPU only with use_cpu: without it every
        # rank would train its own copy, with no gradient all-reduce.
        training["use_cpu"] = True
    return Coordinator(timeout_s=float(training.get("ddp_timeout") or 1800), use_cpu=bool(training.get("use_cpu")))


def _tracker(plan: Plan) -> Tracker | None:
    """``tracking=NAME`` logs every trial there too, unless the backend already does."""
    tracking = plain(plan.cfg.tracking)
    job = plan.job
    return get_tracker(
        tracking, str(plan.cfg.study_name), plan.backend.name, job.objectives, job.run_dir, plan.backend.logs_runs_to
    )


@contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Library objects live for the whole search; freezing them keeps each trial's gc.collect() cheap."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _write_rank_reports(run_dir: Path, reports: list[list[RankReport]]) -> None:
    """``ranks.jsonl``: per trial, what each rank trained, how it ended, and its model afterwards (wrapper class,
    parameter checksum: equal on every rank when DDP kept them in sync), for checking DDP runs."""
    lines = [
        json.dumps(
            {
                "trial": index,
                "rank": rank,
                "state": report.state.value,
                "error": report.error,
                "trained": report.trained,
                **report.model,
            },
            default=str,
        )
        for index, trial_reports in enumerate(reports)
        for rank, report in enumerate(trial_reports)
    ]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "ranks.jsonl").write_text("".join(line + "\n" for line in lines))


def _conclude(result: SearchResult, failures: FailureBudget, job: SearchJob[Any]) -> SearchResult:
    if failures.infeasible:
        raise ConfigError(
            f"constraints: {failures.infeasible_in_a_row} points in a row violated a parameter constraint (last: "
            f"{failures.last_error}); loosen the constraint or narrow the space"
        )
    if failures.exceeded:
        raise SearchAborted(
            f"max_failures: {failures.count} trials failed (max_failures={failures.limit}); last error: "
            f"{failures.last_error}; see {job.run_dir / 'trials.csv'}"
        )
    _report(result, job)
    finished = count_finished(result.trials)
    if finished < job.n_trials:
        running = sum(trial.state is TrialState.RUNNING for trial in result.trials)
        why = (
            f"{running} more still run in other processes; rerun the command later to see them in the results"
            if running
            else "the backend has no more to suggest (a grid, or a space of few points, ran out); "
            "widen the space or lower n_trials"
        )
        raise SearchIncomplete(f"n_trials={job.n_trials}: the search ended with {finished} finished trials: {why}")
    return result


def _report(result: SearchResult, job: SearchJob[Any]) -> None:
    objectives, run_dir = job.objectives, job.run_dir
    if result.best is not None:
        best = result.best
        assert best.values is not None
        print(
            f"best trial {best.number}: {objectives.names[0]}={best.values[0]:.4f} "
            f"hyperparameters={best.params}\nresults: {run_dir}"
        )
    elif result.pareto:
        print(f"pareto front: {len(result.pareto)} trials (see {run_dir / 'pareto.json'})")
    else:
        print(f"no trial completed; see {run_dir / 'trials.csv'}")
