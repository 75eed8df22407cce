"""W&B sweeps backend: hpsearch owns the loop around ``wandb.sweep`` and ``wandb.agent(function=..., count=1)``.

It replaces transformers' ``run_hp_search_wandb``, which overwrites a custom sweep metric with
``eval/loss``, creates two runs per trial, leaves the group empty, knows the best run only in one
process and returns stray ``assignments``/``metric`` keys. Here each trial is exactly one run
(``group=study_name``, ``job_type="trial"``), the objective is logged under the sweep's metric name with
``define_metric``, and results are read back from W&B: the public API online, the local run files offline.

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
=========================  ===================================================================

A sweep optimises one metric, so several objectives are rejected. ``backend.sweep_id`` joins an existing
sweep, so agents on several machines share it; otherwise the sweep created for ``study_name`` is kept in
``<storage_dir>/wandb-<study_name>.json`` and a rerun joins it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpsearch.backends.base import Backend, SearchJob, require, require_in_training_eval
from hpsearch.errors import BackendUnavailableError, ConfigError, HPSearchError, first_line, root_cause
from hpsearch.objective import Objectives
from hpsearch.results import SearchResult, TrialOutcome, TrialRecord
from hpsearch.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, SearchSpace
from hpsearch.tracking import log_outcome, records_from_runs, result_tags, tag_runs, wandb_dir

METHODS = ("random", "grid", "bayes")


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


def sweep_config(space: SearchSpace, objectives: Objectives, settings: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "method": settings.get("method", "bayes"),
        "metric": {"name": objectives.names[0], "goal": objectives.directions[0]},
        "parameters": {param.name: sweep_parameter(param) for param in space},
    }
    if settings.get("early_terminate"):
        config["early_terminate"] = dict(settings["early_terminate"])
    return config


class WandbBackend(Backend):
    name = "wandb"
    package = "wandb"
    extra = "wandb"

    def validate(self, settings: Mapping[str, Any], objectives: Objectives, training: Mapping[str, Any]) -> None:
        self.require("wandb")
        if objectives.is_multi:
            raise ConfigError(
                "backend=wandb: a W&B sweep optimises a single metric; keep one objective, or use "
                "backend=optuna/ray/sigopt with tracking=wandb to compare the Pareto trials in W&B"
            )
        if settings.get("method") not in METHODS:
            raise ConfigError(f"backend.method: unknown method {settings.get('method')!r}; choose one of {list(METHODS)}")
        if settings.get("early_terminate"):
            require_in_training_eval("backend.early_terminate", training, "early termination")

    def _create_sweep(self, wandb: Any, job: SearchJob) -> str:
        if job.settings.get("method") == "grid":
            job.space.grid("backend.method=grid")  # every parameter must be finite
        try:
            sweep_id = wandb.sweep(
                sweep_config(job.space, job.objectives, job.settings),
                entity=job.settings.get("entity"),
                project=job.settings.get("project"),
            )
        except Exception as error:  # noqa: BLE001 - wandb raises many types for one unreachable server
            raise _unavailable(error) from None
        self.remember_id(job, "sweep_id", str(sweep_id))
        return str(sweep_id)

    def search(self, job: SearchJob) -> None:
        wandb = self.require("wandb")
        folder = wandb_dir(job.run_dir)
        _check_reachable()
        sweep_id = self.remembered_id(job, "sweep_id") or self._create_sweep(wandb, job)
        finished = sum(r.state == "COMPLETE" for r in self.records(job))
        job.progress.start(finished)
        while finished < job.n_trials and not job.failures.exceeded:
            box: dict[str, Any] = {}
            try:
                wandb.agent(
                    sweep_id,
                    function=lambda: self._trial(wandb, job, folder, box),
                    count=1,
                    entity=job.settings.get("entity"),
                    project=job.settings.get("project"),
                )
            except HPSearchError:
                raise
            except Exception as error:  # noqa: BLE001
                raise _unavailable(error) from None
            if "error" in box:
                raise box["error"]
            if "outcome" not in box:  # the sweep handed out no run: it is finished (a grid ran out)
                return
            finished += box["outcome"].state == "COMPLETE"

    def _trial(self, wandb: Any, job: SearchJob, folder: Path, box: dict[str, Any]) -> None:
        """Runs inside the agent: one W&B run, one training trial. Errors go back through ``box``."""
        try:
            run = wandb.init(group=job.study_name, job_type="trial", tags=[job.study_name], dir=str(folder))
            params = job.space.cast(dict(run.config))
            job.trainer.intermediate_reporter = lambda step, metrics: run.log(metrics, step=step)
            outcome: TrialOutcome = job.trainer.run_trial(params)
            log_outcome(run, outcome, job.objectives)
            box["outcome"] = outcome
        except HPSearchError as error:
            box["error"] = error

    def _runs(self, job: SearchJob) -> list[Any]:
        from hpsearch.wandb_files import read_runs

        sweep_id = self.remembered_id(job, "sweep_id")
        if sweep_id is None:
            return []
        if os.environ.get("WANDB_MODE") in ("offline", "disabled"):
            return [run for run in read_runs(wandb_dir(job.run_dir) / "wandb") if run.sweep_id == sweep_id.split("/")[-1]]
        wandb = self.require("wandb")
        path = "/".join(part for part in (job.settings.get("entity"), job.settings.get("project"), sweep_id) if part)
        try:
            return sorted(wandb.Api().sweep(path).runs, key=lambda run: run.created_at)
        except Exception as error:  # noqa: BLE001
            raise _unavailable(error) from None

    def records(self, job: SearchJob) -> list[TrialRecord]:
        runs = self._runs(job)
        self._run_ids = [getattr(run, "run_id", None) or run.id for run in runs]
        return records_from_runs(runs, job.objectives, job.space.names, job.space.cast)

    def finish(self, job: SearchJob, result: SearchResult) -> None:
        tagged = {self._run_ids[number]: [job.study_name, *tags] for number, tags in result_tags(result).items()}
        tag_runs(self.require("wandb"), job.settings, wandb_dir(job.run_dir), tagged)

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        """Suggestions from W&B's own sweep engine (the ``sweeps`` package the W&B server runs)."""
        import numpy as np

        sweeps = require("sweeps", "W&B conformance sampling", "sweeps")
        config = sweep_config(space, _one_metric(), {"method": "random"})
        np.random.seed(seed)  # the engine draws from numpy's global generator
        runs: list[Any] = []
        samples = []
        for _ in range(n):
            run = sweeps.next_run(config, runs)
            runs.append(run)
            samples.append(space.cast({name: entry["value"] for name, entry in run.config.items()}))
        return samples


def _one_metric() -> Objectives:
    from hpsearch.objective import Objective

    return Objectives((), (Objective("eval_score", "maximize"),))


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _check_reachable(timeout_s: float = 5.0) -> None:
    """Fail in seconds on a dead server; the client itself waits about 20 s before giving up."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(_base_url())
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout_s).close()
    except OSError as error:
        raise _unavailable(error) from None


def _unavailable(error: BaseException) -> BackendUnavailableError:
    url = _base_url()
    return BackendUnavailableError(
        f"backend=wandb: cannot use the W&B API at {url} ({first_line(root_cause(error))}); "
        "check WANDB_BASE_URL, WANDB_API_KEY and the network, or set WANDB_MODE=offline for the runs"
    )
