"""Optuna backend: hpsearch's trial loop drives an optuna study through its ask-and-tell interface.

The space mapping is in ``space``, the samplers and pruners in ``samplers``, the storages in ``study``, and how
several processes and machines share one study as its trial budget in ``source``. Rerunning the same command
resumes the study and runs only the trials still missing to reach ``n_trials``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.backends.base import Backend, SamplesNatively, SearchJob, method_name, require_in_training_eval
from hpsearch.backends.optuna.samplers import (
    PRUNERS,
    SAMPLERS,
    make_pruner,
    make_sampler,
    sampler_options,
    startup_trials,
)
from hpsearch.backends.optuna.source import SURPLUS, StudySource, fail_running_trial
from hpsearch.backends.optuna.space import suggest
from hpsearch.backends.optuna.study import (
    DEFINITION_ATTR,
    METHOD_ATTR,
    WORKER_PID,
    check_objectives,
    job_storage,
    open_study,
    optuna_states,
    trial_record,
)
from hpsearch.errors import ConfigError
from hpsearch.imports import require
from hpsearch.loop import TrialSource
from hpsearch.objective import Objectives
from hpsearch.settings import Settings, at_least
from hpsearch.space import SearchSpace
from hpsearch.trials import TrialRecord, TrialState

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptunaSettings(Settings):
    """``conf/backend/optuna.yaml``."""

    sampler: str
    sampler_kwargs: dict[str, Any]
    pruner: str
    pruner_kwargs: dict[str, Any]
    heartbeat_interval_s: int | None = at_least(1)
    grace_period_s: int = at_least(1)
    max_retry: int = at_least(0)
    wait_s: float | None = at_least(0)


class OptunaBackend(Backend[OptunaSettings], SamplesNatively):
    name = "optuna"
    settings_type = OptunaSettings
    package = "optuna"

    def __init__(self) -> None:
        # One storage per study and process: each opening of a database storage is a new connection pool, and the
        # workers launcher reads the records every second.
        self._storages: dict[tuple[str | None, Path, str], optuna.storages.BaseStorage] = {}

    def _storage(self, job: SearchJob[OptunaSettings]) -> optuna.storages.BaseStorage:
        key = (job.storage, job.state_dir, job.study_name)
        if key not in self._storages:
            self._storages[key] = job_storage(job)
        return self._storages[key]

    def validate(self, settings: OptunaSettings, objectives: Objectives, training: Mapping[str, Any]) -> None:
        self.require("optuna")
        if settings.sampler not in SAMPLERS:
            raise ConfigError(f"backend.sampler: unknown sampler {settings.sampler!r}; choose one of {list(SAMPLERS)}")
        if settings.pruner not in PRUNERS:
            raise ConfigError(f"backend.pruner: unknown pruner {settings.pruner!r}; choose one of {list(PRUNERS)}")
        if settings.sampler == "cmaes":
            require("cmaes", "backend.sampler=cmaes", extra="cmaes")
        interval, grace = settings.heartbeat_interval_s, settings.grace_period_s
        if interval is not None and grace <= interval:
            raise ConfigError(
                f"backend.grace_period_s={grace}: must be longer than backend.heartbeat_interval_s={interval}, or live "
                "trials would be failed as stale; use about 3 intervals"
            )
        if settings.pruner != "none":
            if objectives.is_multi:
                raise ConfigError(
                    f"backend.pruner={settings.pruner}: optuna cannot prune a multi-objective study; set backend.pruner=none"
                )
            require_in_training_eval(f"backend.pruner={settings.pruner}", training, "pruning")

    def prepare(self, job: SearchJob[OptunaSettings]) -> None:
        """Create or join the study; a new one queues the warm-start points (``enqueue_trial``: a partial point's
        other parameters are sampled, and each is asked before any sampled trial)."""
        study = open_study(job, self._storage(job))
        study.set_user_attr(METHOD_ATTR, self.method(job.settings))
        if not study.trials:
            for point in job.warm_start:
                study.enqueue_trial(point, skip_if_exists=True)

    def stored_definition(self, job: SearchJob[OptunaSettings]) -> dict[str, Any] | None:
        """Kept in the study itself, so that every machine sharing its storage checks against it."""
        value = open_study(job, self._storage(job)).user_attrs.get(DEFINITION_ATTR)
        return dict(json.loads(value)) if value is not None else None

    def keep_definition(self, job: SearchJob[OptunaSettings]) -> None:
        definition = json.dumps(job.definition, sort_keys=True, default=str)
        open_study(job, self._storage(job)).set_user_attr(DEFINITION_ATTR, definition)

    def source(self, job: SearchJob[OptunaSettings]) -> TrialSource:
        study = open_study(job, self._storage(job))
        settings = job.settings
        seed = job.draw_seed(len(study.trials))
        options = sampler_options(settings.sampler, settings.sampler_kwargs, job.n_trials)
        study.sampler = make_sampler(settings.sampler, options, job.space, seed)
        study.pruner = make_pruner(settings.pruner, settings.pruner_kwargs)
        startup = startup_trials(settings.sampler, options)
        if job.n_trials <= startup:
            log.warning(
                "backend.sampler=%s: optuna draws its first %d trials at random, so all n_trials=%d are random; "
                "for the sampler itself to run, set backend.sampler_kwargs.n_startup_trials below n_trials",
                settings.sampler,
                startup,
                job.n_trials,
            )
        return StudySource(study, job)

    def records(self, job: SearchJob[OptunaSettings]) -> list[TrialRecord]:
        import optuna

        try:
            study = optuna.load_study(study_name=job.study_name, storage=self._storage(job))
        except KeyError:
            return []
        check_objectives(study, job)
        trials = [trial for trial in study.get_trials(deepcopy=False) if not trial.system_attrs.get(SURPLUS)]
        return [trial_record(trial, job.space.read(trial.params)) for trial in trials]

    def method(self, settings: OptunaSettings) -> str:
        return method_name(settings.sampler, settings.pruner)

    def abandon(self, job: SearchJob[OptunaSettings], pid: int) -> None:
        study = open_study(job, self._storage(job))
        for trial in study.get_trials(deepcopy=False, states=optuna_states(TrialState.RUNNING)):
            if trial.user_attrs.get(WORKER_PID) == pid:
                fail_running_trial(study._storage, trial._trial_id, f"worker process {pid} died")

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
