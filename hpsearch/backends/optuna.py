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

The study lives in ``storage``: an SQLAlchemy URL (PostgreSQL for a cluster), ``grpc://HOST:PORT`` for
optuna's gRPC storage proxy (``python -m hpsearch.storage_proxy``), by default optuna's journal file
``<storage_dir>/<study_name>.log``: the storage optuna recommends for several processes on one machine
(``workers=N``), which optuna-dashboard reads too. A study kept in ``<storage_dir>/<study_name>.db`` by an
earlier version stays in its SQLite file. Rerunning the same command resumes the study and runs only the
trials still missing to reach ``n_trials``.

In one process with the default storage, ``Trainer.hyperparameter_search`` runs the trials. With workers,
under torchrun, or on a ``storage`` URL (which other machines may share), hpsearch's own trial loop drives
the study through optuna's ask-and-tell interface, and the study itself is the trial budget: a process takes
a trial only while fewer than ``n_trials`` are finished, running or waiting (``StudySource``), so any number
of commands on any number of machines train ``n_trials`` in total. On a database storage each running trial
sends optuna's heartbeat (``backend.heartbeat_interval_s``); a trial silent for ``backend.grace_period_s``
(its worker was preempted or killed) is failed by whichever process looks next, and optuna's
``RetryHeartbeatStaleTrialCallback`` queues it again with the same hyperparameters (``backend.max_retry`` times).
A process with nothing left to take waits up to ``backend.wait_s`` for trials running elsewhere to finish or
go stale, so that none is left RUNNING.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hpsearch.backends.base import Backend, SearchJob, method_name, require_in_training_eval
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

WORKER_PID = "worker_pid"  # trial user attributes: the process training it, and its machine
WORKER_HOST = "worker_host"
NOT_METRICS = (WORKER_PID, WORKER_HOST)  # numeric user attributes that are not eval metrics
WAIT_POLL_S = 2.0  # how often a process with nothing to take looks at the study again
SURPLUS = "hpsearch:surplus"  # system attribute of a trial asked for when the budget was already taken
SAMPLERS = ("tpe", "random", "cmaes", "grid", "nsga2")
SCHEMA_RACE_ATTEMPTS = 5  # opening a database that other processes are initialising at the same moment
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


def open_storage(url: str, settings: Mapping[str, Any] | None = None) -> optuna.storages.BaseStorage:
    """A database storage, with optuna's heartbeat and retry of stale trials as ``settings`` ask; or a client of
    optuna's gRPC storage proxy for ``grpc://HOST:PORT``."""
    import sqlalchemy.exc

    if url.startswith("grpc://"):
        return open_grpc_proxy(url)
    settings = settings or {}
    heartbeat = {}
    if settings.get("heartbeat_interval_s"):  # optuna marks the heartbeat experimental; its warnings are noise here
        heartbeat = {
            "heartbeat_interval": settings["heartbeat_interval_s"],
            "grace_period": settings["grace_period_s"],
            "heartbeat_stale_trial_callback": _retry_callback(settings["max_retry"]),
        }
    engine_kwargs = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    try:
        return _rdb_storage(url, engine_kwargs, heartbeat)
    except ImportError:
        raise MissingPackageError(f"storage={redact_url(url)}", "psycopg[binary]", "postgres") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        raise BackendUnavailableError(
            f"storage: cannot open {redact_url(url)} ({type(error).__name__}: {first_line(error)}); "
            "check the URL, the server and its driver"
        ) from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], heartbeat: dict[str, Any]) -> optuna.storages.RDBStorage:
    import optuna
    import sqlalchemy.exc

    attempt = 1
    while True:
        try:
            with _experimental_quiet():
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            # Processes that start together on an empty database race to create optuna's tables: the loser's
            # CREATE fails on what the winner just made, and opening again finds the schema complete.
            if attempt == SCHEMA_RACE_ATTEMPTS:
                raise
            time.sleep(0.5 * attempt)
            attempt += 1


def open_grpc_proxy(url: str) -> optuna.storages.BaseStorage:
    import optuna

    host, _, port = url.removeprefix("grpc://").rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"storage={url}: a gRPC storage proxy is grpc://HOST:PORT, e.g. grpc://127.0.0.1:13000")
    require("grpc", f"storage={url}", "grpcio", "grpc")
    with _experimental_quiet():
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    try:
        proxy.wait_server_ready(timeout=10)
    except Exception as error:  # noqa: BLE001 - grpc raises its own timeout types
        raise BackendUnavailableError(
            f"storage: no gRPC storage proxy answers at {url} ({type(error).__name__}); start one with "
            "python -m hpsearch.storage_proxy DATABASE_URL --port PORT"
        ) from None
    return proxy


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
        _check_heartbeat(settings)
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
            return open_storage(job.storage, job.settings)
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
        if study.metric_names is None:  # the objectives' names, for optuna-dashboard and comparisons
            with _experimental_quiet():
                study.set_metric_names(job.objectives.names)
        _check_objectives(study, job)
        return study

    def search(self, job: SearchJob) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        study = self._study(job)
        settings = job.settings
        study.set_user_attr("hpsearch_method", self.method(settings))  # for hpsearch compare --study
        # Under torchrun rank zero drives the study itself: transformers' DDP path makes the other ranks count
        # trials on their own, which deadlocks on pruning and failures (see hpsearch.distributed). Workers and
        # other machines share the study, which then counts the trials for all of them.
        own_loop = job.loop.trainer.coordinator is not None or job.loop.shared or job.storage is not None
        shared = job.loop.shared or job.storage is not None
        seed = _sampler_seed(job.seed, len(study.trials), shared)
        study.sampler = make_sampler(settings["sampler"], settings.get("sampler_kwargs") or {}, job.space, seed)
        study.pruner = make_pruner(settings["pruner"], settings.get("pruner_kwargs") or {})
        if own_loop:
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
        _check_objectives(study, job)
        fixed = {param.name: param.value for param in job.space if isinstance(param, FixedParam)}
        trials = [trial for trial in study.get_trials(deepcopy=False) if not trial.system_attrs.get(SURPLUS)]
        return [
            trial_record(trial, _ordered({**fixed, **trial.params}, job.space.names))
            for trial in trials
        ]

    def prepare(self, job: SearchJob) -> None:
        self._study(job)

    def method(self, settings: Mapping[str, Any]) -> str:
        return method_name(settings["sampler"], settings["pruner"])

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
    """optuna's ask-and-tell interface as a ``TrialSource``: the shared trial loop drives the study, and the
    study is the budget that every process sharing it draws from (see the module docstring)."""

    bounds_trials = True

    def __init__(self, study: optuna.Study, job: SearchJob) -> None:
        self.study = study
        self.job = job
        settings = job.settings
        interval = settings.get("heartbeat_interval_s") or 0
        self.wait_s = float(settings["wait_s"] if settings.get("wait_s") is not None else settings.get("grace_period_s", 0) + 2 * interval)

    def finished(self) -> int:
        return _finished(self.study)

    def next(self, train: Train) -> TrialOutcome | None:
        import optuna
        from optuna.storages._heartbeat import get_heartbeat_thread  # the heartbeat study.optimize sends

        trial = self._take()
        if trial is None:
            return None
        trial.set_user_attr(WORKER_PID, os.getpid())
        trial.set_user_attr(WORKER_HOST, socket.gethostname())
        try:
            with get_heartbeat_thread(trial._trial_id, self.study._storage):
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

    def _take(self) -> optuna.Trial | None:
        """The next trial of the budget, or None once ``n_trials`` are finished (or the grid is used up).

        While every remaining trial runs elsewhere, wait up to ``wait_s`` for one to fail or go stale (a
        preempted worker's trial, failed here and queued again by optuna's retry callback)."""
        import optuna

        states = optuna.trial.TrialState
        deadline = time.monotonic() + self.wait_s
        while not _grid_exhausted(self.study):
            with _experimental_quiet():
                optuna.storages.fail_stale_trials(self.study)
            self._fail_orphans()
            counts = Counter(trial.state for trial in self.study.get_trials(deepcopy=False))
            finished = counts[states.COMPLETE] + counts[states.PRUNED]
            waiting, running = counts[states.WAITING], counts[states.RUNNING]
            if finished >= self.job.n_trials:
                return None
            if waiting or finished + running < self.job.n_trials:
                trial = self.study.ask()  # takes a waiting (retried) trial first
                if not self._surplus(trial):
                    return trial
                continue
            if time.monotonic() > deadline:
                return None
            time.sleep(WAIT_POLL_S)
        return None

    def _fail_orphans(self) -> None:
        """A running trial of a process on this machine that no longer exists (a killed command; on a storage
        without heartbeats such as the journal file, or before its first heartbeat) can never finish: fail it,
        and where the storage retries stale trials, queue it again."""
        import optuna

        storage, host = self.study._storage, socket.gethostname()
        retry = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            pid = trial.user_attrs.get(WORKER_PID)
            if trial.user_attrs.get(WORKER_HOST) == host and isinstance(pid, int) and not _process_exists(pid):
                try:
                    failed = storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # another process failed it first
                if failed and retry is not None:  # as for a stale heartbeat: queue the same hyperparameters again
                    with _experimental_quiet():
                        retry(self.study, storage.get_trial(trial._trial_id))

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Two processes asked for the last trial at the same moment: the one with the higher number (the
        storage numbers trials in order) finds ``n_trials`` ahead of it, fails its trial unseen and waits."""
        import optuna

        ahead = sum(
            other.number < trial.number and other.state != optuna.trial.TrialState.FAIL
            for other in self.study.get_trials(deepcopy=False)
        )
        if ahead < self.job.n_trials:
            return False
        self.study._storage.set_trial_system_attr(trial._trial_id, SURPLUS, True)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return True


@contextmanager
def _experimental_quiet() -> Iterator[None]:
    """optuna warns on every use of its experimental heartbeat, retry and gRPC proxy APIs."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _retry_callback(max_retry: int) -> Callable[..., None]:
    import optuna

    with _experimental_quiet():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _check_objectives(study: optuna.Study, job: SearchJob) -> None:
    """A stored study keeps its objectives: another objective under the same name is a config error."""
    existing = [direction.name.lower() for direction in study.directions]
    if existing != job.objectives.directions or study.metric_names not in (None, job.objectives.names):
        stored = list(zip(study.metric_names or ["?"] * len(existing), existing))
        raise ConfigError(
            f"study_name={job.study_name}: the stored study optimises {stored}, not "
            f"{list(zip(job.objectives.names, job.objectives.directions))}; choose another study_name"
        )


def _sampler_seed(seed: int, stored_trials: int, shared: bool) -> int:
    """Offset by the trials already stored, so that a resumed study does not replay its first samples; mixed
    with the process and machine when others share the study, so that no two of them draw the same ones."""
    if not shared:
        return seed + stored_trials
    import numpy as np

    process = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
    return int(np.random.SeedSequence([seed, stored_trials, process]).generate_state(1)[0])


def _check_heartbeat(settings: Mapping[str, Any]) -> None:
    """The heartbeat keys: whole seconds (optuna's unit), a grace period longer than the interval."""
    interval, grace = settings.get("heartbeat_interval_s"), settings.get("grace_period_s")
    minimums = {"grace_period_s": 1, "max_retry": 0, **({"heartbeat_interval_s": 1} if interval is not None else {})}
    for key, minimum in minimums.items():
        value = settings.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"backend.{key}: must be an integer >= {minimum} (got {value!r})")
    if interval is not None and grace <= interval:
        raise ConfigError(
            f"backend.grace_period_s={grace}: must be longer than backend.heartbeat_interval_s={interval}, or live "
            "trials would be failed as stale; use about 3 intervals"
        )
    wait = settings.get("wait_s")
    if wait is not None and (not isinstance(wait, (int, float)) or isinstance(wait, bool) or wait < 0):
        raise ConfigError(f"backend.wait_s: must be a number of seconds >= 0 or null (got {wait!r})")


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
    """Each eval metric as its own user attribute, where optuna-dashboard shows it."""
    for name, value in outcome.metrics.items():
        trial.set_user_attr(name, value)
    if outcome.error:
        trial.set_user_attr("error", outcome.error)


def _store_or_stop(trial: optuna.Trial, outcome: TrialOutcome, job: SearchJob) -> None:
    """Inside transformers' ``study.optimize``: store the outcome, and stop the study once too many failed."""
    _store(trial, outcome)
    if job.loop.stopped:
        trial.study.stop()


def trial_record(trial: optuna.trial.FrozenTrial, params: dict[str, Any]) -> TrialRecord:
    """One optuna trial as hpsearch records it; a queued (WAITING) retry counts as running."""
    state = trial.state.name if trial.state.name in TrialState.__members__ else TrialState.RUNNING
    return TrialRecord(
        number=trial.number,
        state=state,
        values=list(trial.values) if trial.values is not None else None,
        params=params,
        metrics=trial_metrics(trial),
        duration_s=trial.duration.total_seconds() if trial.duration else None,
        finished_at=trial.datetime_complete.timestamp() if trial.datetime_complete else None,
    )


def trial_metrics(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """A trial's eval metrics: its numeric user attributes (a study of hpsearch 0.2 kept them as one dict)."""
    attrs = trial.user_attrs
    stored = {name: value for name, value in attrs.items() if name not in NOT_METRICS and isinstance(value, (int, float))}
    return {**dict(attrs.get("metrics", {})), **stored}


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_states(TrialState.COMPLETE, TrialState.PRUNED)))


def _states(*states: TrialState) -> tuple[optuna.trial.TrialState, ...]:
    import optuna

    return tuple(optuna.trial.TrialState[state.value] for state in states)


def _ordered(values: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    return {name: values[name] for name in names if name in values}
