"""Optuna backend, run through ``Trainer.hyperparameter_search(backend="optuna")``.

Space mapping. Optuna's own ranges are closed too, so bounds pass through unchanged:

=========================  ===========================================================
neutral                    optuna
=========================  ===========================================================
float [low, high]          ``FloatDistribution(low, high)``
float, log: true           ``FloatDistribution(low, high, log=True)``
float, step: s             ``FloatDistribution(low, high, step=s)``: low, low+s, ..., high
int [low, high], step: s   ``IntDistribution(low, high, step=s)``: high is included
int, log: true             ``IntDistribution(low, high, log=True)``
categorical                ``CategoricalDistribution(choices)``
fixed                      not sampled; its value joins every trial
=========================  ===========================================================

The grid sampler enumerates categorical choices, int ranges and stepped float ranges, both ends included.

The study lives in ``storage`` (an SQLAlchemy URL, such as PostgreSQL's), by default in optuna's journal file
``<storage_dir>/<study_name>.log``: the storage optuna recommends for several processes on one machine
(``workers=N``), which optuna-dashboard reads too. A study kept in ``<storage_dir>/<study_name>.db`` by an
earlier version stays in its SQLite file. Rerunning the same command resumes the study and runs only the
trials still missing to reach ``n_trials``. With workers or under torchrun, hpsearch's own trial loop drives the
study through optuna's ask-and-tell interface; in one process, ``Trainer.hyperparameter_search`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from hpsearch.backends.base import Backend, SearchJob, require_in_training_eval
from hpsearch.errors import (
    BackendUnavailableError,
    ConfigError,
    HPSearchError,
    MissingPackageError,
    TrialFailed,
    first_line,
)
from hpsearch.imports import require
from hpsearch.loop import Train, TrialSource
from hpsearch.objective import Objectives
from hpsearch.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, SearchSpace
from hpsearch.trials import TrialOutcome, TrialRecord, TrialState

if TYPE_CHECKING:
    import optuna

WORKER_PID = "worker_pid"  # trial user attribute: the process training it
SAMPLERS = ("tpe", "random", "cmaes", "grid", "nsga2")
PRUNERS = ("none", "median", "successive_halving", "hyperband")


def distribution(param: Param) -> optuna.distributions.BaseDistribution | None:
    """The exact optuna distribution of a neutral parameter; None for fixed ones."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, CategoricalParam):
        return CategoricalDistribution(param.choices)
    return None


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Typed values for every parameter of ``space``; suggesting twice in one trial is idempotent."""
    from optuna.distributions import FloatDistribution, IntDistribution

    values: dict[str, Any] = {}
    for param in space:
        native = distribution(param)
        if native is None:
            values[param.name] = param.value  # type: ignore[union-attr]
        elif isinstance(native, FloatDistribution):
            values[param.name] = trial.suggest_float(param.name, native.low, native.high, step=native.step, log=native.log)
        elif isinstance(native, IntDistribution):
            values[param.name] = trial.suggest_int(param.name, native.low, native.high, step=native.step, log=native.log)
        else:
            values[param.name] = trial.suggest_categorical(param.name, native.choices)
    return values


def make_sampler(name: str, options: Mapping[str, Any], space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, **options),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed, **options),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, **options),
        "grid": lambda: optuna.samplers.GridSampler(space.grid("backend.sampler=grid"), seed=seed, **options),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, **options),
    }
    return factories[name]()


def make_pruner(name: str, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    import optuna

    factories: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
        "none": lambda: optuna.pruners.NopPruner(),
        "median": lambda: optuna.pruners.MedianPruner(**options),
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(**options),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(**options),
    }
    return factories[name]()


def open_storage(url: str) -> optuna.storages.BaseStorage:
    import optuna
    import sqlalchemy.exc

    engine_kwargs = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError:
        raise MissingPackageError(f"storage={redact_url(url)}", "psycopg[binary]", "postgres") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        raise BackendUnavailableError(
            f"storage: cannot open {redact_url(url)} ({type(error).__name__}: {first_line(error)}); "
            "check the URL, the server and its driver"
        ) from None


def redact_url(url: str) -> str:
    """Hide a password in ``scheme://user:password@host/db``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not (sep and at and ":" in credentials):
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


class OptunaBackend(Backend):
    name = "optuna"
    package = "optuna"

    def validate(self, settings: Mapping[str, Any], objectives: Objectives, training: Mapping[str, Any]) -> None:
        self.require("optuna")
        sampler, pruner = settings.get("sampler"), settings.get("pruner")
        if sampler not in SAMPLERS:
            raise ConfigError(f"backend.sampler: unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
        if pruner not in PRUNERS:
            raise ConfigError(f"backend.pruner: unknown pruner {pruner!r}; choose one of {list(PRUNERS)}")
        if sampler == "cmaes":
            require("cmaes", "backend.sampler=cmaes", extra="cmaes")
        if pruner != "none":
            if objectives.is_multi:
                raise ConfigError(
                    f"backend.pruner={pruner}: optuna cannot prune a multi-objective study; set backend.pruner=none"
                )
            require_in_training_eval(f"backend.pruner={pruner}", training, "pruning")

    def _storage(self, job: SearchJob) -> optuna.storages.BaseStorage:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        if job.storage:
            return open_storage(job.storage)
        job.state_dir.mkdir(parents=True, exist_ok=True)
        sqlite = job.state_dir / f"{job.study_name}.db"
        if sqlite.is_file():
            return open_storage(f"sqlite:///{sqlite}")
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str(job.state_dir / f"{job.study_name}.log")))

    def _study(self, job: SearchJob) -> optuna.Study:
        import optuna

        study = optuna.create_study(
            study_name=job.study_name,
            storage=self._storage(job),
            directions=job.objectives.directions,
            load_if_exists=True,
        )
        existing = [direction.name.lower() for direction in study.directions]
        if existing != job.objectives.directions:
            raise ConfigError(
                f"study_name={job.study_name}: the stored study optimises {existing}, not "
                f"{job.objectives.directions}; choose another study_name"
            )
        return study

    def search(self, job: SearchJob) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = self._study(job)
        settings = job.settings
        # Offset the seed by the trials already stored, so a resumed study does not replay its first samples.
        study.sampler = make_sampler(settings["sampler"], settings.get("sampler_kwargs") or {}, job.space, job.seed + len(study.trials))
        study.pruner = make_pruner(settings["pruner"], settings.get("pruner_kwargs") or {})
        if job.loop.trainer.coordinator is not None or job.loop.shared:
            # Under torchrun rank zero drives the study itself: transformers' DDP path makes the other ranks
            # count trials on their own, which deadlocks on pruning and failures (see hpsearch.distributed).
            # Worker processes claim each trial from the budget they share before asking for it.
            def report(trial: optuna.Trial, step: int, metrics: dict[str, float]) -> None:
                _report_and_prune(trial, step, job.objectives.values(metrics)[0])

            job.loop.attach(report=None if job.objectives.is_multi else report)
            job.loop.run(StudySource(study, job))
            return
        finished = _finished(study)
        job.loop.start(finished)
        if finished >= job.n_trials:
            return
        job.loop.attach(assign=lambda trial: suggest(trial, job.space), finished=lambda trial, outcome: _store_or_stop(trial, outcome, job))
        try:
            job.loop.trainer.hyperparameter_search(
                hp_space=lambda trial: suggest(trial, job.space),
                compute_objective=job.objectives.compute_objective,
                n_trials=job.n_trials - finished,
                direction=job.objectives.directions if job.objectives.is_multi else job.objectives.directions[0],
                backend="optuna",
                study_name=job.study_name,
                storage=study._storage,
                sampler=study.sampler,
                pruner=study.pruner,
                load_if_exists=True,
                catch=(TrialFailed,),
                gc_after_trial=False,
            )
        except ValueError as error:
            # transformers reads study.best_trial at the end, which raises when no trial completed.
            if isinstance(error, HPSearchError) or study.get_trials(deepcopy=False, states=_states(TrialState.COMPLETE)):
                raise

    def records(self, job: SearchJob) -> list[TrialRecord]:
        import optuna

        try:
            study = optuna.load_study(study_name=job.study_name, storage=self._storage(job))
        except KeyError:
            return []
        fixed = {param.name: param.value for param in job.space if isinstance(param, FixedParam)}
        return [
            TrialRecord(
                number=trial.number,
                state=TrialState(trial.state.name),
                values=list(trial.values) if trial.values is not None else None,
                params=_ordered({**fixed, **trial.params}, job.space.names),
                metrics=dict(trial.user_attrs.get("metrics", {})),
                duration_s=trial.duration.total_seconds() if trial.duration else None,
            )
            for trial in study.get_trials(deepcopy=False)
        ]

    def prepare(self, job: SearchJob) -> None:
        self._study(job)

    def abandon(self, job: SearchJob, pid: int) -> None:
        import optuna

        study = self._study(job)
        for trial in study.get_trials(deepcopy=False, states=_states(TrialState.RUNNING)):
            if trial.user_attrs.get(WORKER_PID) == pid:
                study._storage.set_trial_user_attr(trial._trial_id, "error", f"worker process {pid} died")
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        samples = []
        for _ in range(n):
            trial = study.ask()
            samples.append(suggest(trial, space))
            study.tell(trial, 0.0)
        return samples


class StudySource(TrialSource):
    """optuna's ask-and-tell interface as a ``TrialSource``: the shared trial loop drives the study."""

    def __init__(self, study: optuna.Study, job: SearchJob) -> None:
        self.study = study
        self.job = job

    def finished(self) -> int:
        return _finished(self.study)

    def next(self, train: Train) -> TrialOutcome | None:
        import optuna

        if _grid_exhausted(self.study):
            return None
        trial = self.study.ask()
        trial.set_user_attr(WORKER_PID, os.getpid())
        try:
            outcome = train(trial, suggest(trial, self.job.space))
        except BaseException:  # Ctrl-C, a config error: the trial must not stay RUNNING
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        _store(trial, outcome)
        state = optuna.trial.TrialState[outcome.state.value]
        try:
            self.study.tell(trial, outcome.values if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        except RuntimeError:
            # A used-up grid makes GridSampler call study.stop(), which raises outside study.optimize once the
            # trial is stored; the next call then finds the grid exhausted.
            if not _grid_exhausted(self.study):
                raise
        return outcome


def _grid_exhausted(study: optuna.Study) -> bool:
    import optuna

    return isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study)


def _report_and_prune(trial: optuna.Trial, step: int, value: float) -> None:
    """What transformers does for optuna after each in-training evaluation: report, and maybe prune."""
    import optuna

    trial.report(value, step)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at step {step}")


def _store(trial: optuna.Trial, outcome: TrialOutcome) -> None:
    trial.set_user_attr("metrics", outcome.metrics)
    if outcome.error:
        trial.set_user_attr("error", outcome.error)


def _store_or_stop(trial: optuna.Trial, outcome: TrialOutcome, job: SearchJob) -> None:
    """Inside transformers' ``study.optimize``: store the outcome, and stop the study once too many failed."""
    _store(trial, outcome)
    if job.loop.stopped:
        trial.study.stop()


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_states(TrialState.COMPLETE, TrialState.PRUNED)))


def _states(*states: TrialState) -> tuple[optuna.trial.TrialState, ...]:
    import optuna

    return tuple(optuna.trial.TrialState[state.value] for state in states)


def _ordered(values: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    return {name: values[name] for name in names if name in values}
