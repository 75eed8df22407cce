"""W&B sweeps backend: hpsearch owns the loop around ``wandb.sweep`` and ``wandb.agent(function=..., count=1)``.

It replaces transformers' ``run_hp_search_wandb``, which overwrites a custom sweep metric with
``eval/loss``, creates two runs per trial, leaves the group empty, knows the best run only in one
process and returns stray ``assignments``/``metric`` keys. Here each trial is exactly one run
(``group=study_name``, ``job_type="trial"``), the objective is logged last under the sweep's metric name
(the run summary's value), and results are read back from W&B: the public API online, the local run files offline.

Space mapping (W&B sweep parameters; ranges are closed in both):

=========================  ===================================================================
neutral                    W&B sweep parameter
=========================  ===================================================================
float [low, high]          ``{distribution: uniform, min: low, max: high}``
float, log: true           ``{distribution: log_uniform_values, min: low, max: high}`` (not
                           ``log_uniform``, whose bounds are exponents)
float, step: s             ``{distribution: q_uniform, min, max, q: s}`` when low is a multiple of s
                           (W&B rounds to multiples of q); else ``{values: [low, ..., high]}``
int [low, high]            ``{distribution: int_uniform, min: low, max: high}``
int, log: true             ``{distribution: q_log_uniform_values, min, max, q: 1}``
int, step: s > 1           ``{values: [low, low+s, ..., high]}``
categorical                ``{values: choices}``
fixed                      ``{value: v}``
when: {other: values}      sampled always (sweeps have no conditions); where the condition fails
                           hpsearch drops it: not trained with, left out of the trial's records,
                           and named in the run summary's ``hpsearch/inactive``
=========================  ===================================================================

Constraints: a point that breaks a parameter constraint is a failed run, never trained; outcome constraints
are logged with each run (``constraint_<name>``), and best and Pareto trials are feasible ones. A sweep cannot
queue a point, so hpsearch trains each ``warm_start`` point itself, as a run of the sweep, before the sweep's
own suggestions (W&B's engine draws what a partial point leaves out).

With ``WANDB_MODE=offline`` and no ``WANDB_BASE_URL``, nothing touches the network: W&B's own sweep engine
(the ``sweeps`` package a W&B server runs) suggests each trial in this process, from the runs already written,
and the runs are written offline as usual; ``wandb sync`` uploads them later. A sweep optimises one metric, so
several objectives are rejected. ``backend.sweep_id`` joins an existing
sweep, so agents on several machines share it; otherwise the sweep created for ``study_name`` is kept in
``<storage_dir>/wandb-<study_name>.json`` and a rerun joins it.
"""

from __future__ import annotations

import json
import os
import random
import socket
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.backends.base import (
    Backend,
    RemembersRemoteStudy,
    SamplesNatively,
    SearchJob,
    method_name,
    require_in_training_eval,
)
from hpsearch.errors import BackendUnavailableError, ConfigError, HPSearchError, first_line, root_cause
from hpsearch.imports import require
from hpsearch.loop import Train, TrialSource
from hpsearch.objective import Objective, Objectives
from hpsearch.settings import Settings
from hpsearch.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, SearchSpace
from hpsearch.tracking.wandb import (
    DURATION_KEY,
    ERROR_KEY,
    STATE_KEY,
    USER_WANDB_DIR,
    WandbTracker,
    finish_run,
    log_outcome,
    result_tags,
    tag_runs,
)
from hpsearch.trials import SearchResult, TrialOutcome, TrialRecord, TrialState, stored_trial
from hpsearch.warm_start import pending_points

METHODS = ("random", "grid", "bayes")


@dataclass(frozen=True)
class WandbSettings(Settings):
    """``conf/backend/wandb.yaml``. Credentials and server come from ``WANDB_API_KEY`` / ``WANDB_BASE_URL``."""

    entity: str | None
    project: str | None
    sweep_id: str | None
    method: str
    early_terminate: dict[str, Any] | None


def sweep_parameter(param: Param) -> dict[str, Any]:
    if isinstance(param, FixedParam):
        return {"value": param.value}
    if isinstance(param, CategoricalParam):
        return {"values": list(param.choices)}
    if isinstance(param, FloatParam):
        if param.log:
            return {"distribution": "log_uniform_values", "min": param.low, "max": param.high}
        if param.step is None:
            return {"distribution": "uniform", "min": param.low, "max": param.high}
        if param.on_multiples_of_step:
            return {"distribution": "q_uniform", "min": param.low, "max": param.high, "q": param.step}
        return {"values": param.values()}
    assert isinstance(param, IntParam)
    if param.log:
        return {"distribution": "q_log_uniform_values", "min": param.low, "max": param.high, "q": 1}
    if param.step == 1:
        return {"distribution": "int_uniform", "min": param.low, "max": param.high}
    return {"values": param.values()}


def sweep_config(
    space: SearchSpace, objectives: Objectives, method: str, early_terminate: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "method": method,
        "metric": {"name": objectives.names[0], "goal": objectives.directions[0]},
        "parameters": {param.name: sweep_parameter(param) for param in space},
    }
    if early_terminate:
        config["early_terminate"] = dict(early_terminate)
    return config


SWEEP_ID = "sweep_id"
INACTIVE_KEY = "hpsearch/inactive"  # run summary key: the sampled parameters whose condition failed
LOCAL_SWEEP_KEY = "hpsearch/local_sweep"  # run summary key: the sweep of a run hpsearch started itself, not an agent


class WandbBackend(Backend[WandbSettings], RemembersRemoteStudy[WandbSettings], SamplesNatively):
    name = "wandb"
    settings_type = WandbSettings
    package = "wandb"
    extra = "wandb"
    logs_runs_to = WandbTracker.name

    def validate(self, settings: WandbSettings, objectives: Objectives, training: Mapping[str, Any]) -> None:
        self.require("wandb")
        if objectives.is_multi:
            raise ConfigError(
                "backend=wandb: a W&B sweep optimises a single metric; keep one objective, or use "
                "backend=optuna/ray/sigopt with tracking=wandb to compare the Pareto trials in W&B"
            )
        if settings.method not in METHODS:
            raise ConfigError(f"backend.method: unknown method {settings.method!r}; choose one of {list(METHODS)}")
        if settings.early_terminate:
            require_in_training_eval("backend.early_terminate", training, "early termination")

    def _create_sweep(self, wandb: Any, job: SearchJob[WandbSettings]) -> str:
        settings = job.settings
        if settings.method == "grid":
            job.space.grid("backend.method=grid")  # every parameter must be finite
        try:
            # run_cap: the W&B server stops handing out runs at n_trials, whichever machines run the agents.
            sweep_id = wandb.sweep(
                {
                    **sweep_config(job.space, job.objectives, settings.method, settings.early_terminate),
                    "run_cap": job.n_trials,
                },
                entity=settings.entity,
                project=settings.project,
            )
        except Exception as error:  # noqa: BLE001 - wandb raises many types for one unreachable server
            raise _unavailable(error) from None
        self.remember_id(job, SWEEP_ID, str(sweep_id))
        return str(sweep_id)

    def method(self, settings: WandbSettings) -> str:
        return method_name(settings.method, (settings.early_terminate or {}).get("type"))

    def run_files(self, job: SearchJob[WandbSettings]) -> Path:
        """Where W&B writes this study's local run files: ``$WANDB_DIR`` when set, else kept with the study's
        state in ``storage_dir`` (so a rerun finds the earlier runs), linked from the run directory."""
        if USER_WANDB_DIR:
            folder = Path(USER_WANDB_DIR).resolve()
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        return self.keep_with_study(job, "wandb", inside="wandb")

    def prepare(self, job: SearchJob[WandbSettings]) -> None:
        """Create the sweep (or a local one, offline without a server) unless this study_name has one."""
        if self.remembered_id(job, SWEEP_ID):
            return
        if _local_engine():
            self.remember_id(job, SWEEP_ID, f"local-{uuid.uuid4().hex[:8]}")
            return
        if not _offline():
            _check_reachable()
        self._create_sweep(self.require("wandb"), job)

    def source(self, job: SearchJob[WandbSettings]) -> TrialSource:
        sweep_id = self.remembered_id(job, SWEEP_ID)
        assert sweep_id is not None, "prepare() creates the sweep"
        source = LocalSweepSource if _local_engine() else SweepSource
        return source(self, job, self.require("wandb"), sweep_id)

    def _runs(self, job: SearchJob[WandbSettings]) -> list[Any]:
        from hpsearch.wandb_files import merged_runs

        sweep_id = self.remembered_id(job, SWEEP_ID)
        if sweep_id is None:
            return []
        if _offline():
            sweep = sweep_id.split("/")[-1]
            return [
                run
                for run in merged_runs(self.run_files(job) / "wandb")
                if sweep in (run.sweep_id, run.summary.get(LOCAL_SWEEP_KEY))
            ]
        wandb = self.require("wandb")
        path = "/".join(part for part in (job.settings.entity, job.settings.project, sweep_id) if part)
        try:
            return sorted(wandb.Api().sweep(path).runs, key=lambda run: run.created_at)
        except Exception as error:  # noqa: BLE001
            raise _unavailable(error) from None

    def records(self, job: SearchJob[WandbSettings]) -> list[TrialRecord]:
        """Trial records from W&B runs (offline ``RunFile``s or public-API runs), oldest first."""
        records = []
        for number, run in enumerate(self._runs(job)):
            summary = dict(run.summary)
            state = TrialState(summary.get(STATE_KEY, TrialState.RUNNING.value))
            records.append(
                stored_trial(
                    number=number,
                    state=state,
                    params=job.space.read(dict(run.config)),
                    reported={
                        name: _summary_value(value) for name, value in summary.items() if not name.startswith("_")
                    },
                    values=[float(_summary_value(summary[n])) for n in job.objectives.names]
                    if state is TrialState.COMPLETE
                    else None,
                    duration_s=summary.get(DURATION_KEY),
                    error=summary.get(ERROR_KEY),
                    key=getattr(run, "run_id", None) or run.id,
                    finished_at=summary.get("_timestamp"),
                )
            )
        return records

    def abandon(self, job: SearchJob[WandbSettings], pid: int) -> None:
        """Close the run worker ``pid`` left open as failed, as W&B's server marks a run crashed once its
        heartbeat stops. A killed process's offline run file may hold nothing yet (W&B buffers it), so each
        trial leaves an open-run marker with its run id and hyperparameters until it ends."""
        wandb = self.require("wandb")
        for marker in OpenRun.of_process(self.run_files(job), pid):
            closing = wandb.init(
                id=marker.run_id,
                resume="allow",
                entity=job.settings.entity,
                project=job.settings.project,
                config=marker.params,
                dir=str(self.run_files(job)),
                reinit="create_new",
            )
            closing.summary[STATE_KEY] = TrialState.FAIL.value
            closing.summary[ERROR_KEY] = f"its worker process {pid} died"
            if marker.local_sweep:
                closing.summary[LOCAL_SWEEP_KEY] = marker.local_sweep
            finish_run(closing, exit_code=1)
            marker.close()

    def finish(self, job: SearchJob[WandbSettings], result: SearchResult) -> None:
        by_number = {trial.number: trial.key for trial in result.trials}
        tagged = {str(by_number[number]): [job.study_name, *tags] for number, tags in result_tags(result).items()}
        tag_runs(self.require("wandb"), job.settings.entity, job.settings.project, self.run_files(job), tagged)

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        """Suggestions from W&B's own sweep engine (the ``sweeps`` package the W&B server runs)."""
        import numpy as np

        sweeps = require("sweeps", "W&B conformance sampling", "sweeps")
        config = sweep_config(space, Objectives(items=(Objective("eval_score", "maximize"),)), "random")
        random.seed(seed)  # the engine draws from Python's and numpy's global generators
        np.random.seed(seed)
        runs: list[Any] = []
        samples = []
        for _ in range(n):
            run = sweeps.next_run(config, runs)
            runs.append(run)
            samples.append(space.cast({name: entry["value"] for name, entry in run.config.items()}))
        return samples


class SweepSource(TrialSource):
    """A W&B sweep as a ``TrialSource``: one ``wandb.agent(count=1)`` call per trial, one run per trial."""

    joins_server = True  # a run hpsearch starts itself joins the server's sweep (the run's ``sweep_id`` setting)

    def __init__(self, backend: WandbBackend, job: SearchJob[WandbSettings], wandb: Any, sweep_id: str) -> None:
        self.backend = backend
        self.job = job
        self.wandb = wandb
        self.sweep_id = sweep_id
        self.folder = backend.run_files(job)

    def report(self, handle: Any, step: int, metrics: dict[str, float]) -> None:
        handle.log(metrics, step=step)  # W&B's early termination reads these

    def next(self, train: Train) -> TrialOutcome | None:
        job, box = self.job, dict[str, Any]()
        earlier = self.backend.records(job) if job.warm_start else []
        if warm := pending_points(job.warm_start, earlier):  # W&B cannot queue a point: hpsearch runs it itself
            return self._own_run(train, self._filled(warm[0], len(earlier)), warm[0])
        try:
            self.wandb.agent(
                self.sweep_id,
                function=lambda: self._trial(train, box),
                count=1,
                entity=job.settings.entity,
                project=job.settings.project,
            )
        except HPSearchError:
            raise
        except Exception as error:  # noqa: BLE001
            if _is_unknown_sweep(error) and self.backend.remembered_id(job, SWEEP_ID):
                raise self.backend.unknown_id(job, SWEEP_ID, self.sweep_id) from None
            raise _unavailable(error) from None
        if "error" in box:
            raise box["error"]
        return box.get("outcome")  # none: the sweep handed out no run (a grid ran out)

    def _filled(self, point: dict[str, Any], stored_trials: int) -> dict[str, Any]:
        """A warm-start point, the active parameters it leaves out drawn at random by W&B's own sweep engine."""
        job = self.job
        known = {**job.space.single_values(), **point}
        if all(p.name in known or not job.space.is_active(p.name, known) for p in job.space.tunable):
            return job.space.cast(known)
        sweeps = require("sweeps", "warm_start with a partial point on backend=wandb", "sweeps", "wandb")
        job.seed_global_generators(stored_trials)
        drawn = sweeps.next_run(sweep_config(job.space, job.objectives, "random"), [])
        return job.space.cast({**{name: entry["value"] for name, entry in drawn.config.items()}, **point})

    def _own_run(self, train: Train, params: dict[str, Any], sampled: Mapping[str, Any]) -> TrialOutcome:
        """One trial in a run hpsearch starts itself, not an agent, recorded in the same sweep: W&B's server
        attaches it by the run's ``sweep_id`` setting, and the run summary names the sweep too."""
        job = self.job
        joined = {"settings": self.wandb.Settings(sweep_id=self.sweep_id.split("/")[-1])} if self.joins_server else {}
        run = self.wandb.init(
            group=job.study_name,
            job_type="trial",
            tags=[job.study_name],
            config=params,
            dir=str(self.folder),
            reinit="create_new",
            **joined,
        )
        run.summary[LOCAL_SWEEP_KEY] = self.sweep_id
        _note_inactive(run, job.space, sampled, params)
        with OpenRun.opened(self.folder, run.id, params, self.sweep_id):
            outcome = train(run, params)
            log_outcome(run, outcome, job.objectives)
        return outcome

    def _trial(self, train: Train, box: dict[str, Any]) -> None:
        """Runs inside the agent: one W&B run, one training trial. Errors go back through ``box``."""
        job = self.job
        try:
            run = self.wandb.init(group=job.study_name, job_type="trial", tags=[job.study_name], dir=str(self.folder))
            params = job.space.cast(dict(run.config))
            _note_inactive(run, job.space, dict(run.config), params)
            with OpenRun.opened(self.folder, run.id, params):
                outcome = train(run, params)
                log_outcome(run, outcome, job.objectives)
            box["outcome"] = outcome
        except HPSearchError as error:
            box["error"] = error


class LocalSweepSource(SweepSource):
    """W&B's own sweep engine in this process, for offline sweeps without a server; one offline run per trial."""

    joins_server = False  # no server: the run summary names the sweep

    def __init__(self, backend: WandbBackend, job: SearchJob[WandbSettings], wandb: Any, sweep_id: str) -> None:
        super().__init__(backend, job, wandb, sweep_id)
        self.sweeps = require(
            "sweeps", "backend=wandb with WANDB_MODE=offline and no WANDB_BASE_URL", "sweeps", "wandb"
        )
        self.config = sweep_config(job.space, job.objectives, job.settings.method, job.settings.early_terminate)

    def next(self, train: Train) -> TrialOutcome | None:
        job = self.job
        records = self.backend.records(job)
        runs = [self._sweep_run(record) for record in records]
        job.seed_global_generators(len(runs))
        suggestion = self.sweeps.next_run(self.config, runs)
        if suggestion is None:  # a grid ran out
            return None
        drawn = {name: entry["value"] for name, entry in suggestion.config.items()}
        warm = pending_points(job.warm_start, records)  # first: the engine's draw fills in what a point leaves out
        sampled = {**drawn, **(warm[0] if warm else {})}
        return self._own_run(train, job.space.cast(sampled), sampled)

    def _sweep_run(self, record: TrialRecord) -> Any:
        """A finished trial as the engine sees a run: its config and its objective in the summary."""
        metric = self.job.objectives.names[0]
        return self.sweeps.SweepRun(
            name=record.key,
            state=self.sweeps.RunState.finished if record.is_complete else self.sweeps.RunState.failed,
            config={name: {"value": value} for name, value in record.params.items()},
            summaryMetrics={metric: record.complete_values[0]} if record.is_complete else {},
        )


@dataclass(frozen=True)
class OpenRun:
    """``<run files>/hpsearch-open/<run id>.json`` while a trial's run is open: which process trains it."""

    path: Path
    run_id: str
    pid: int
    host: str
    params: dict[str, Any]
    local_sweep: str | None

    @classmethod
    @contextmanager
    def opened(
        cls, folder: Path, run_id: str, params: Mapping[str, Any], local_sweep: str | None = None
    ) -> Iterator[None]:
        path = folder / "hpsearch-open" / f"{run_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        marker = {"pid": os.getpid(), "host": socket.gethostname(), "params": dict(params), "local_sweep": local_sweep}
        path.write_text(json.dumps(marker, default=str))
        try:
            yield
        finally:
            path.unlink(missing_ok=True)

    @classmethod
    def of_process(cls, folder: Path, pid: int) -> list[OpenRun]:
        markers = []
        for path in sorted((folder / "hpsearch-open").glob("*.json")):
            data = json.loads(path.read_text())
            if data["pid"] == pid and data["host"] == socket.gethostname():
                markers.append(cls(path, path.stem, pid, data["host"], data["params"], data["local_sweep"]))
        return markers

    def close(self) -> None:
        self.path.unlink(missing_ok=True)


def _note_inactive(run: Any, space: SearchSpace, sampled: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """W&B sweeps have no conditions: a parameter the sweep drew but whose ``when`` failed was not trained with,
    and the run summary says so (``hpsearch/inactive``); the trial's records leave it out."""
    inactive = sorted(name for name in sampled if name in space.names and name not in params)
    if inactive:
        run.summary[INACTIVE_KEY] = inactive


def _local_engine() -> bool:
    """Offline with no server named: the sweep runs on W&B's own engine in this process."""
    return _offline() and not os.environ.get("WANDB_BASE_URL")


def _offline() -> bool:
    return os.environ.get("WANDB_MODE") in ("offline", "disabled")


def _is_unknown_sweep(error: BaseException) -> bool:
    text = str(root_cause(error)).lower()
    return "not found" in text or "404" in text


def _summary_value(value: Any) -> Any:
    """A value of the run summary; runs logged by hpsearch 0.3 with ``define_metric(summary="max"|"min")`` keep
    ``{"max": v}`` / ``{"min": v}`` there."""
    if isinstance(value, Mapping):
        return value.get("max", value.get("min"))
    return value


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _check_reachable(timeout_s: float = 5.0) -> None:
    """Fail in seconds on a dead server; the client itself waits about 20 s before giving up."""
    from urllib.parse import urlsplit

    url = urlsplit(_base_url())
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s
        ).close()
    except OSError as error:
        raise _unavailable(error) from None


def _unavailable(error: BaseException) -> BackendUnavailableError:
    url = _base_url()
    return BackendUnavailableError(
        f"backend=wandb: cannot use the W&B API at {url} ({first_line(root_cause(error))}); "
        "check WANDB_BASE_URL, WANDB_API_KEY and the network, or set WANDB_MODE=offline for the runs"
    )
