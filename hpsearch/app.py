"""``run(cfg)``: one hyperparameter search from a composed config. Pure: no argv, no sys.exit."""

from __future__ import annotations

import gc
import json
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hpsearch.backends import get_backend
from hpsearch.backends.base import Backend, SearchJob, require_in_training_eval
from hpsearch.config import save_resolved
from hpsearch.distributed import Coordinator, world_size
from hpsearch.errors import CollectiveTimeout, ConfigError, HPSearchError, SearchAborted, first_line
from hpsearch.loop import FailureBudget, Listener, TrialLoop
from hpsearch.objective import Objectives
from hpsearch.progress import SearchProgress
from hpsearch.rerun import rerun_space
from hpsearch.results import write_search_results
from hpsearch.space import SearchSpace
from hpsearch.trials import SearchResult
from hpsearch.workers import WorkerReport, run_workers, visible_gpus, worker_budget, worker_count, worker_index


def _positive_int(cfg: DictConfig, key: str, minimum: int) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}: must be an integer >= {minimum} (got {value!r})")
    return value


def _quiet_libraries() -> None:
    import datasets
    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # read errors are reported as DataError
    huggingface_hub.utils.logging.set_verbosity_error()  # its retry warnings, likewise
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true but no accelerator.*")


def _instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    try:
        return instantiate(node, **kwargs)
    except Exception as error:  # noqa: BLE001 - Hydra wraps import and call errors alike
        cause = error.__cause__ if isinstance(error.__cause__, HPSearchError) else None
        if cause is not None:
            raise cause from None
        raise ConfigError(f"{key}: cannot instantiate {node.get('_target_')!r} ({first_line(error)})") from None


def search_space(cfg: DictConfig) -> SearchSpace:
    space = SearchSpace.from_config(OmegaConf.to_container(cfg.space, resolve=True))
    return rerun_space(space, Path(cfg.rerun)) if cfg.get("rerun") else space


def run(cfg: DictConfig) -> SearchResult | None:
    """Validate the config, load model and data once, run the search, write the results.

    Under torchrun every rank calls this; rank zero runs the search and returns its result, the other
    ranks follow rank zero's decisions and return None. With ``workers=N`` this process starts N worker
    processes, each of which calls this too and returns None, and writes the results once they are done.
    """
    n_trials = 1 if cfg.get("rerun") else _positive_int(cfg, "n_trials", 1)
    seed = _positive_int(cfg, "seed", 0)
    max_failures = _positive_int(cfg, "max_failures", 0)
    run_dir = Path(cfg.run_dir)
    space = search_space(cfg)
    objectives = Objectives.from_config(OmegaConf.to_container(cfg.objective, resolve=True))
    if "_target_" not in cfg.data:  # a data._target_ task names its own metrics, known once it is built
        objectives.check_reachable()
    backend = get_backend(str(cfg.backend.name))
    settings = OmegaConf.to_container(cfg.backend, resolve=True)
    training = OmegaConf.to_container(cfg.training, resolve=True)
    backend.validate(settings, objectives, training)
    if cfg.get("save_best_model") and objectives.is_multi and not cfg.get("rerun"):
        raise ConfigError(
            "save_best_model: a Pareto search has no single best trial; to keep a front trial's model, write its "
            "hyperparameters from pareto.json to a YAML file and train it with rerun=FILE save_best_model=true"
        )
    if objectives.select == "best":
        require_in_training_eval("objective.select=best", training, "taking the best evaluation")
    workers = _workers(cfg)
    job = SearchJob(
        loop=None,
        space=space,
        objectives=objectives,
        n_trials=n_trials,
        seed=seed,
        study_name=str(cfg.study_name) + ("-rerun" if cfg.get("rerun") else ""),
        storage=None if cfg.get("rerun") else cfg.get("storage"),
        state_dir=_state_dir(cfg, run_dir),
        run_dir=run_dir,
        settings=settings,
        workers=workers,
    )
    if cfg.get("results_only") or _already_finished(backend, job):
        save_resolved(cfg, run_dir / "config.yaml")
        result = write_search_results(backend, job)
        _report(result, objectives, run_dir)
        return result
    failures = FailureBudget(max_failures)
    progress = SearchProgress(n_trials, objectives, enabled=cfg.get("progress", True) and worker_index() is None)
    if workers > 1 and worker_index() is None and not backend.runs_own_workers:
        save_resolved(cfg, run_dir / "config.yaml")
        result = run_workers(cfg, backend, job, progress, failures)
        return _conclude(result, failures, objectives, run_dir)
    coordinator = _coordinator(backend, training)
    leader = coordinator is None or coordinator.is_leader
    listeners = _tracking(cfg, backend, run_dir, objectives) if leader else []
    trainer = _build_trainer(cfg, training, space, objectives, run_dir, seed, coordinator)
    if not leader:
        _follow(trainer, coordinator)
        return None
    if worker_index() is not None:
        job.loop = TrialLoop(trainer, n_trials, progress, failures, [*listeners, WorkerReport(run_dir)], budget=worker_budget())
        with _long_lived_frozen():
            backend.search(job)
        return None

    save_resolved(cfg, run_dir / "config.yaml")
    job.loop = TrialLoop(trainer, n_trials, progress, failures, listeners)
    try:
        with _long_lived_frozen():
            backend.search(job)
    except CollectiveTimeout:
        coordinator = None  # the other ranks are gone: nobody to tell
        raise
    finally:
        progress.close()
        if coordinator is not None:
            coordinator.decide(("stop",))
            coordinator.close()
        if trainer.rank_reports:
            _write_rank_reports(run_dir, trainer.rank_reports)
        result = write_search_results(backend, job)
    for listener in listeners:
        getattr(listener, "finish", lambda result: None)(result)
    return _conclude(result, failures, objectives, run_dir)


def _already_finished(backend: Backend, job: SearchJob) -> bool:
    """A study that already holds ``n_trials`` finished trials trains nothing: say so, in one line."""
    if worker_index() is not None or world_size() > 1:  # the launcher or rank zero decides for the others
        return False
    finished = sum(record.state.finished for record in backend.records(job))
    if finished < job.n_trials:
        return False
    print(
        f"hpsearch: study_name={job.study_name} already has {finished} finished trials (n_trials={job.n_trials}), so "
        "nothing will run; for more, raise n_trials or pick another study_name",
        file=sys.stderr,
    )
    return True


@contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Library objects live for the whole search; freezing them keeps each trial's gc.collect() cheap."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _conclude(result: SearchResult, failures: FailureBudget, objectives: Objectives, run_dir: Path) -> SearchResult:
    if failures.exceeded:
        raise SearchAborted(
            f"max_failures: {failures.count} trials failed (max_failures={failures.limit}); last error: "
            f"{failures.last_error}; see {run_dir / 'trials.csv'}"
        )
    _report(result, objectives, run_dir)
    return result


def _workers(cfg: DictConfig) -> int:
    """``workers``, or ``workers_per_gpu`` times this machine's GPUs; a clear error for bad values."""
    workers, per_gpu = cfg.get("workers"), cfg.get("workers_per_gpu")
    for key, value in (("workers", workers), ("workers_per_gpu", per_gpu)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{key}: must be an integer >= 1 or null (got {value!r})")
    count = worker_count(workers, per_gpu, visible_gpus() if per_gpu is not None else [])
    if count > 1 and world_size() > 1:
        raise ConfigError(
            f"workers={count}: torchrun already runs one process per device; drop workers or run without torchrun"
        )
    return count


def _build_trainer(
    cfg: DictConfig,
    training: dict[str, Any],
    space: SearchSpace,
    objectives: Objectives,
    run_dir: Path,
    seed: int,
    coordinator: Coordinator | None,
) -> Any:
    """Tokenizer, the task's data (tokenised once) and the trainer every trial reuses."""
    _quiet_libraries()
    from transformers import PrinterCallback

    from hpsearch.best_model import BestModelKeeper
    from hpsearch.model import ModelInit
    from hpsearch.trainer import SearchTrainer, check_space_routing
    from hpsearch.training import check_training, training_arguments

    check_training(training, space.names)
    args = training_arguments(training, run_dir, seed)
    target = _instantiate(cfg.model.model_init, "model.model_init", _partial_=True)
    probe = ModelInit.build(target, {"num_labels": 2, "id2label": {}, "label2id": {}, "tokenizer": None})
    check_space_routing(space, probe)  # before loading anything: a misrouted parameter is a config error
    task, tokenizer = _task(cfg, objectives, seed)
    trainer = SearchTrainer(
        hpsearch_model_init=ModelInit.build(target, {**task.model_context, "tokenizer": tokenizer}),
        space=space,
        objectives=objectives,
        coordinator=coordinator,
        best_model=BestModelKeeper(run_dir / "best_model", objectives) if cfg.get("save_best_model") else None,
        args=args,
        train_dataset=task.train,
        eval_dataset=task.eval,
        data_collator=task.data_collator,
        compute_metrics=task.compute_metrics,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)  # per-step log lines; the search shows its own progress
    return trainer


def _task(cfg: DictConfig, objectives: Objectives, seed: int) -> tuple[Any, Any]:
    """The task and the tokenizer: from ``data._target_``, or the built-in text classification/regression."""
    from hpsearch.data import read_data, text_task
    from hpsearch.task import task_from_target

    if "_target_" in cfg.data:
        tokenizer = _instantiate(cfg.model.tokenizer, "model.tokenizer")
        task = task_from_target(_instantiate(cfg.data, "data._target_", _partial_=True), tokenizer, seed)
        objectives.check_reachable(task.metric_names)
        return task, tokenizer
    texts = read_data(cfg.data, seed)  # data errors first: a tokenizer may be trained on the same file
    compute_metrics = objectives.metric_function(texts.regression)
    tokenizer = _instantiate(cfg.model.tokenizer, "model.tokenizer")
    return text_task(texts, cfg.data, tokenizer, compute_metrics, objectives.metrics), tokenizer


def _coordinator(backend: Backend, training: dict[str, Any]) -> Coordinator | None:
    """The DDP control channel under torchrun (WORLD_SIZE > 1), else None."""
    if world_size() <= 1:
        return None
    if not backend.runs_under_torchrun:
        raise ConfigError(f"backend={backend.name}: {backend.torchrun_hint}")
    import torch

    if not torch.cuda.is_available():
        # transformers wraps the model in DistributedDataParallel on CPU only with use_cpu: without it every
        # rank would train its own copy, with no gradient all-reduce.
        training["use_cpu"] = True
    return Coordinator(timeout_s=float(training.get("ddp_timeout") or 1800), use_cpu=bool(training.get("use_cpu")))


def _follow(trainer: Any, coordinator: Coordinator) -> None:
    """A non-zero rank: train whatever rank zero decides until it says stop."""
    while (message := coordinator.decide())[0] == "trial":
        trainer.run_trial(message[1])
    coordinator.close()


def _write_rank_reports(run_dir: Path, reports: list[list[Any]]) -> None:
    """``ranks.jsonl``: per trial, what each rank trained, how it ended, and its model afterwards (wrapper class,
    parameter checksum: equal on every rank when DDP kept them in sync), for checking DDP runs."""
    lines = [
        json.dumps({"trial": index, "rank": rank, "state": state, "error": error, "trained": trained, **model}, default=str)
        for index, trial_reports in enumerate(reports)
        for rank, (state, error, trained, model) in enumerate(trial_reports)
    ]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "ranks.jsonl").write_text("".join(line + "\n" for line in lines))


def _tracking(cfg: DictConfig, backend: Backend, run_dir: Path, objectives: Objectives) -> list[Listener]:
    """``tracking=wandb`` logs trials as W&B runs, unless the backend does so itself."""
    tracking = OmegaConf.to_container(cfg.tracking, resolve=True)
    if tracking.get("name", "none") == "none" or backend.logs_wandb_runs:
        return []
    if tracking["name"] != "wandb":
        raise ConfigError(f"tracking: unknown tracking {tracking['name']!r}; choose none or wandb")
    from hpsearch.wandb_tracking import WandbTracker

    return [WandbTracker(tracking, str(cfg.study_name), backend.name, objectives, run_dir)]


def _state_dir(cfg: DictConfig, run_dir: Path) -> Path:
    if cfg.get("rerun"):  # a re-run is one fresh trial, never a resume of the search's own study
        return (run_dir / "rerun-state").resolve()
    return Path(cfg.storage_dir).expanduser().resolve()


def _report(result: SearchResult, objectives: Objectives, run_dir: Path) -> None:
    if result.best is not None:
        best = result.best
        print(
            f"best trial {best.number}: {objectives.names[0]}={best.values[0]:.4f} "
            f"hyperparameters={best.params}\nresults: {run_dir}"
        )
    elif result.pareto:
        print(f"pareto front: {len(result.pareto)} trials (see {run_dir / 'pareto.json'})")
    else:
        print(f"no trial completed; see {run_dir / 'trials.csv'}")
