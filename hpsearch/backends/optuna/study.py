"""Opening optuna storages and studies, and reading their trials back.

The study lives in ``storage``: an SQLAlchemy URL (PostgreSQL for a cluster), ``grpc://HOST:PORT`` for optuna's
gRPC storage proxy (``python -m hpsearch.storage_proxy``), by default optuna's journal file
``<storage_dir>/<study_name>.log``: the storage optuna recommends for several processes on one machine, which
optuna-dashboard reads too. A study kept in ``<storage_dir>/<study_name>.db`` by an earlier version stays in its
SQLite file.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hpsearch.backends.base import SearchJob
from hpsearch.config import redact_text
from hpsearch.errors import BackendUnavailableError, ConfigError, MissingPackageError, first_line
from hpsearch.imports import require
from hpsearch.trials import TrialRecord, TrialState, stored_trial

if TYPE_CHECKING:
    import optuna

WORKER_PID = "worker_pid"  # trial user attributes: the process training it, its machine and pid namespace
WORKER_HOST = "worker_host"
WORKER_PID_NAMESPACE = "worker_pid_namespace"
METHOD_ATTR = "hpsearch_method"  # study user attribute: the search method, for hpsearch compare --study
DEFINITION_ATTR = "hpsearch:definition"  # study user attribute: what defines the study (hpsearch.definition)
SCHEMA_RACE_ATTEMPTS = 5  # opening a database that other processes are initialising at the same moment


@contextmanager
def experimental_quiet() -> Iterator[None]:
    """optuna warns on every use of its experimental heartbeat, retry and gRPC proxy APIs, and on every ask of a
    heartbeat storage outside ``study.optimize`` (whose loop hpsearch's own loop replaces, heartbeat included)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def open_storage(
    url: str, heartbeat_interval_s: int | None = None, grace_period_s: int = 0, max_retry: int = 0
) -> optuna.storages.BaseStorage:
    """A database storage, with optuna's heartbeat and retry of stale trials when ``heartbeat_interval_s`` is
    set; or a client of optuna's gRPC storage proxy for ``grpc://HOST:PORT``."""
    import sqlalchemy.exc

    if url.startswith("grpc://"):
        return open_grpc_proxy(url)
    heartbeat: dict[str, Any] = {}
    if heartbeat_interval_s:
        heartbeat = {
            "heartbeat_interval": heartbeat_interval_s,
            "grace_period": grace_period_s,
            "heartbeat_stale_trial_callback": _retry_callback(max_retry),
        }
    engine_kwargs = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    try:
        return _rdb_storage(url, engine_kwargs, heartbeat)
    except ImportError:
        raise MissingPackageError(f"storage={redact_text(url)}", "psycopg[binary]", "postgres") from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as error:
        raise BackendUnavailableError(
            f"storage: cannot open {redact_text(url)} ({type(error).__name__}: {first_line(error)}); "
            "check the URL, the server and its driver"
        ) from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], heartbeat: dict[str, Any]) -> optuna.storages.RDBStorage:
    import optuna
    import sqlalchemy.exc

    attempt = 1
    while True:
        try:
            with experimental_quiet():
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
    with experimental_quiet():
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=int(port))
    try:
        proxy.wait_server_ready(timeout=10)
    except Exception as error:  # noqa: BLE001 - grpc raises its own timeout types
        raise BackendUnavailableError(
            f"storage: no gRPC storage proxy answers at {url} ({type(error).__name__}); start one with "
            "python -m hpsearch.storage_proxy DATABASE_URL --port PORT"
        ) from None
    return proxy


def open_journal(path: str) -> optuna.storages.BaseStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(path))


def _retry_callback(max_retry: int) -> Callable[..., None]:
    import optuna

    with experimental_quiet():
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def job_storage(job: SearchJob[Any]) -> optuna.storages.BaseStorage:
    """The storage of a search: ``job.storage``, an earlier version's SQLite file, or the journal file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if job.storage:
        settings = job.settings
        return open_storage(job.storage, settings.heartbeat_interval_s, settings.grace_period_s, settings.max_retry)
    job.state_dir.mkdir(parents=True, exist_ok=True)
    sqlite = job.state_dir / f"{job.study_name}.db"
    if sqlite.is_file():
        return open_storage(f"sqlite:///{sqlite}")
    return open_journal(str(job.state_dir / f"{job.study_name}.log"))


def open_study(job: SearchJob[Any], storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the study, or load it if it exists, with the objectives' names; another objective is an error."""
    import optuna

    study = optuna.create_study(
        study_name=job.study_name, storage=storage, directions=job.objectives.directions, load_if_exists=True
    )
    if study.metric_names is None:  # the objectives' names, for optuna-dashboard and comparisons
        with experimental_quiet():
            study.set_metric_names(job.objectives.names)
    check_objectives(study, job)
    return study


def check_objectives(study: optuna.Study, job: SearchJob[Any]) -> None:
    """A stored study keeps its objectives: another objective under the same name is a config error."""
    existing = [direction.name.lower() for direction in study.directions]
    if existing != job.objectives.directions or study.metric_names not in (None, job.objectives.names):
        stored = list(zip(study.metric_names or ["?"] * len(existing), existing, strict=False))
        raise ConfigError(
            f"study_name={job.study_name}: the stored study optimises {stored}, not "
            f"{list(zip(job.objectives.names, job.objectives.directions, strict=False))}; choose another study_name"
        )


def trial_record(trial: optuna.trial.FrozenTrial, params: dict[str, Any]) -> TrialRecord:
    """One optuna trial as hpsearch records it; a queued (WAITING) retry counts as running."""
    state = trial.state.name if trial.state.name in TrialState.__members__ else TrialState.RUNNING
    attrs = trial.user_attrs
    return stored_trial(
        number=trial.number,
        state=state,
        params=params,
        reported={**dict(attrs.get("metrics", {})), **attrs},  # hpsearch 0.2 kept the metrics as one dict
        values=list(trial.values) if trial.values is not None else None,
        duration_s=trial.duration.total_seconds() if trial.duration else None,
        error=attrs.get("error"),
        finished_at=trial.datetime_complete.timestamp() if trial.datetime_complete else None,
    )


def optuna_states(*states: TrialState) -> tuple[optuna.trial.TrialState, ...]:
    import optuna

    return tuple(optuna.trial.TrialState[state.value] for state in states)
