"""SigOpt backend, through the Core API (``sigopt.Connection``): experiments, suggestions, observations.

transformers 5 dropped SigOpt, so hpsearch owns the loop: ask a suggestion, train it, report an observation
(``failed=True`` when the trial failed). Any SigOpt-compatible server works: set ``SIGOPT_API_URL`` (or
``backend.api_url``) and ``SIGOPT_API_TOKEN``. The hosted api.sigopt.com service is gone and the
self-hosted sigopt-server is archived; hpsearch's tests run the real client against a local stand-in.

Space mapping (SigOpt bounds are closed, like hpsearch's):

=========================  ====================================================================
neutral                    SigOpt parameter
=========================  ====================================================================
float [low, high]          ``{type: double, bounds: {min: low, max: high}}``
float, log: true           the same with ``transformation: log``
float, step: s             ``{type: double, grid: [low, low+s, ..., high]}``
int [low, high]            ``{type: int, bounds: {min: low, max: high}}``
int, log: true             ``{type: double, bounds: {min: low, max: high}, transformation: log}``: SigOpt
                           log-transforms doubles only; the answer is rounded to the nearest int
int, step: s > 1           ``{type: int, grid: [low, low+s, ..., high]}``
categorical                ``{type: categorical, categorical_values: [str(c), ...]}``: SigOpt answers
                           with strings, cast back to the declared choice (``"32"`` -> 32, ``"None"`` -> None)
fixed, low == high,        not sent (SigOpt needs min < max and two or more categories); the value
one choice                 joins every assignment
when: {other: values}      on a SigOpt server, where every parent is a categorical (not itself
                           conditional): the parents are SigOpt ``conditionals`` and the parameter has
                           ``conditions``, so SigOpt leaves it out. Else, and with sigoptlite (whose
                           conditionals call ``numpy.product``, gone in numpy 2), drawn always and
                           dropped by hpsearch
=========================  ====================================================================

Constraints: each outcome constraint is a SigOpt constraint metric (``strategy: constraint``, minimised,
``threshold: 0``), reported with every completed observation, so SigOpt's optimizer learns the feasible region;
a point that breaks a parameter constraint is a failed observation, which SigOpt avoids. Warm start: each point
is a suggestion created with those assignments (sigoptlite, which ignores given assignments, records it as an
observation with them); a partial point takes its other values from a suggestion of SigOpt's own.

``observation_budget`` is ``n_trials``; each objective is one SigOpt metric, so several objectives make a
multi-metric experiment whose Pareto front comes from ``best_assignments``. The experiment id is kept in
``<storage_dir>/sigopt-<study_name>.json`` (or given as ``backend.experiment_id``): rerunning joins it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpsearch.backends.base import Backend, RemembersRemoteStudy, SamplesNatively, SearchJob
from hpsearch.errors import BackendUnavailableError, ConfigError, first_line, root_cause
from hpsearch.imports import require
from hpsearch.loop import Train, TrialSource
from hpsearch.objective import Objectives
from hpsearch.settings import Settings
from hpsearch.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, SearchSpace
from hpsearch.trials import CONSTRAINT_PREFIX, TrialOutcome, TrialRecord, TrialState, stored_trial
from hpsearch.warm_start import pending_points

TOKEN_ENV = "SIGOPT_API_TOKEN"
EXPERIMENT_ID = "experiment_id"
LITE_EXPERIMENT_ID = "-1"  # sigoptlite's one in-memory experiment


def native_parameter(param: Param) -> dict[str, Any] | None:
    """The SigOpt parameter definition of a neutral parameter; None when it has a single value."""
    if isinstance(param, FixedParam):
        return None
    if isinstance(param, CategoricalParam):
        if len(param.choices) == 1:
            return None
        return {"name": param.name, "type": "categorical", "categorical_values": [str(c) for c in param.choices]}
    if param.low == param.high:
        return None
    kind = "double" if isinstance(param, FloatParam) or param.log else "int"
    stepped = param.step is not None if isinstance(param, FloatParam) else param.step > 1
    if stepped:
        return {"name": param.name, "type": kind, "grid": param.values()}
    native: dict[str, Any] = {"name": param.name, "type": kind, "bounds": {"min": param.low, "max": param.high}}
    if param.log:
        native["transformation"] = "log"
    return native


def typed_assignments(space: SearchSpace, assignments: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values for every parameter from SigOpt's assignments (log-scale ints come back as doubles; the
    parameters SigOpt is not asked about have a single value)."""
    values = dict(assignments)
    for param in space:
        if isinstance(param, IntParam) and param.log and param.name in assignments:
            values[param.name] = round(float(assignments[param.name]))
    return space.cast({**space.single_values(), **values})


def conditional_parents(space: SearchSpace) -> list[CategoricalParam]:
    """The parents that become SigOpt conditionals: categoricals of two or more choices, themselves
    unconditioned, that some condition names (a SigOpt conditional is a variable of its own, not a parameter)."""
    named = {parent for when in space.conditions.values() for parent in when}
    return [
        param
        for param in space
        if param.name in named
        and isinstance(param, CategoricalParam)
        and len(param.choices) > 1
        and param.name not in space.conditions
    ]


def native_parameters(space: SearchSpace, conditional: bool = False) -> list[dict[str, Any]]:
    """SigOpt's parameters; with ``conditional``, the parents of conditions are left to ``native_conditionals``
    and a parameter whose parents all are conditionals carries ``conditions`` (any other is drawn always)."""
    conditionals = {param.name for param in conditional_parents(space)} if conditional else set()
    natives = []
    for param in space:
        native = native_parameter(param) if param.name not in conditionals else None
        if native is None:
            continue
        when = space.conditions.get(param.name, {})
        if when and set(when) <= conditionals:
            native["conditions"] = {parent: [str(value) for value in values] for parent, values in when.items()}
        natives.append(native)
    return natives


def native_conditionals(space: SearchSpace) -> dict[str, Any]:
    """The experiment's ``conditionals``, as keyword arguments (none for a space without conditions)."""
    parents = conditional_parents(space)
    return (
        {"conditionals": [{"name": p.name, "values": [str(c) for c in p.choices]} for p in parents]} if parents else {}
    )


def native_assignments(space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any]:
    """Typed values as SigOpt assignments: the parameters and conditionals SigOpt is asked about, categories
    as strings."""
    return {
        param.name: str(values[param.name]) if isinstance(param, CategoricalParam) else values[param.name]
        for param in space
        if param.name in values and native_parameter(param) is not None
    }


def native_metrics(job: SearchJob[Any]) -> list[dict[str, Any]]:
    """One metric per objective, and one constraint metric per outcome constraint (feasible at or below 0)."""
    outcome = [constraint.metric for constraint in job.space.constraints if constraint.on_outcome]
    return [{"name": o.metric, "objective": o.direction} for o in job.objectives.items] + [
        {"name": name, "objective": "minimize", "strategy": "constraint", "threshold": 0.0} for name in outcome
    ]


@dataclass(frozen=True)
class SigOptSettings(Settings):
    """``conf/backend/sigopt.yaml``. The token comes only from the ``SIGOPT_API_TOKEN`` environment variable."""

    api_url: str | None
    verify_ssl: bool
    timeout_s: float
    experiment_id: str | int | None
    driver: str


class SigOptBackend(Backend[SigOptSettings], RemembersRemoteStudy[SigOptSettings], SamplesNatively):
    name = "sigopt"
    settings_type = SigOptSettings
    package = "sigopt"
    extra = "sigopt"

    def validate(self, settings: SigOptSettings, objectives: Objectives, training: Mapping[str, Any]) -> None:
        self.require("sigopt")
        if settings.driver not in ("http", "lite"):
            raise ConfigError(f"backend.driver: must be http or lite (got {settings.driver!r})")
        if settings.driver == "http" and not os.environ.get(TOKEN_ENV):
            raise ConfigError(
                f"backend=sigopt: set the {TOKEN_ENV} environment variable "
                "(and SIGOPT_API_URL for a self-hosted server)"
            )

    def __init__(self) -> None:
        self._connection: Any = None  # a client cache; with sigoptlite it also holds the experiment, in memory

    def connection(self, settings: SigOptSettings) -> Any:
        """One connection per backend: sigoptlite keeps its experiments inside it."""
        if self._connection is not None:
            return self._connection
        if settings.driver == "lite":
            self._connection = self._lite_connection()
            return self._connection
        connection = self.require("sigopt").Connection(client_token=os.environ.get(TOKEN_ENV))
        if settings.api_url:
            connection.set_api_url(settings.api_url)
        connection.set_verify_ssl_certs(settings.verify_ssl)
        connection.set_timeout(float(settings.timeout_s))
        self._connection = connection
        return connection

    def _lite_connection(self) -> Any:
        require("sigoptlite", "backend.driver=lite", "sigoptlite")
        return self.require("sigopt").Connection(driver="lite")

    def _call(self, job: SearchJob[SigOptSettings], request: Any) -> Any:
        """Run one API request; connection and API errors become one line."""
        from sigopt.exception import ApiException, ConnectionException

        try:
            return request()
        except ConnectionException as error:
            url = job.settings.api_url or os.environ.get("SIGOPT_API_URL") or "https://api.sigopt.com"
            raise BackendUnavailableError(
                f"backend=sigopt: cannot reach the SigOpt API at {url} ({first_line(root_cause(error))}); "
                "check SIGOPT_API_URL and that the server runs"
            ) from None
        except ApiException as error:
            remembered = self.remembered_id(job, EXPERIMENT_ID)
            if error.status_code == 404 and remembered is not None:
                raise self.unknown_id(job, EXPERIMENT_ID, remembered) from None
            raise BackendUnavailableError(
                f"backend=sigopt: the API refused a request (HTTP {error.status_code}: {error.message}); "
                f"check {TOKEN_ENV} and backend settings"
            ) from None

    def _experiment_id(self, job: SearchJob[SigOptSettings]) -> str | None:
        if job.settings.driver == "lite":
            return LITE_EXPERIMENT_ID if self._lite_experiment_exists(job) else None
        return self.remembered_id(job, EXPERIMENT_ID)

    def _lite_experiment_exists(self, job: SearchJob[SigOptSettings]) -> bool:
        """sigoptlite holds one experiment, in this process's connection: nothing outlives the process."""
        from sigopt.exception import SigOptException

        try:
            self.connection(job.settings).experiments(LITE_EXPERIMENT_ID).fetch()
        except SigOptException:
            return False
        return True

    def _create_experiment(self, connection: Any, job: SearchJob[SigOptSettings]) -> str:
        experiment = self._call(
            job,
            lambda: connection.experiments().create(
                name=job.study_name,
                type="offline",
                # sigoptlite's conditionals call numpy.product, which numpy 2 removed: there, drawn and dropped
                parameters=native_parameters(job.space, conditional=job.settings.driver != "lite"),
                **(native_conditionals(job.space) if job.settings.driver != "lite" else {}),
                metrics=native_metrics(job),
                observation_budget=job.n_trials,
                parallel_bandwidth=job.workers,
            ),
        )
        if job.settings.driver != "lite":
            self.remember_id(job, EXPERIMENT_ID, str(experiment.id))
        return str(experiment.id)

    def _observations(self, connection: Any, job: SearchJob[SigOptSettings], experiment_id: str) -> list[Any]:
        pages = self._call(
            job, lambda: list(connection.experiments(experiment_id).observations().fetch().iterate_pages())
        )
        return sorted(pages, key=lambda o: (o.created or 0, int(o.id) if str(o.id).isdigit() else 0))

    def method(self, settings: SigOptSettings) -> str:
        return "sigoptlite" if settings.driver == "lite" else "sigopt server"

    def prepare(self, job: SearchJob[SigOptSettings]) -> None:
        """Create the experiment, or close the suggestions a crashed run left open, before workers share it.
        An experiment joined by ``backend.experiment_id`` may have other machines' trials open: left alone."""
        connection = self.connection(job.settings)
        joined = self._experiment_id(job)
        experiment_id = joined or self._create_experiment(connection, job)
        if joined and not self.configured_id(job, EXPERIMENT_ID):
            self._call(job, lambda: connection.experiments(experiment_id).suggestions().delete(state="open"))

    def source(self, job: SearchJob[SigOptSettings]) -> TrialSource:
        experiment_id = self._experiment_id(job)
        assert experiment_id is not None, "prepare() creates the experiment"
        return ExperimentSource(self, job, experiment_id)

    def records(self, job: SearchJob[SigOptSettings]) -> list[TrialRecord]:
        experiment_id = self._experiment_id(job)
        if experiment_id is None:
            return []
        connection = self.connection(job.settings)
        records = []
        for number, observation in enumerate(self._observations(connection, job, experiment_id)):
            metadata = dict(observation.metadata or {})
            by_name = {value.name: value.value for value in observation.values or []}
            constraints = {name: value for name, value in by_name.items() if name.startswith(CONSTRAINT_PREFIX)}
            records.append(
                stored_trial(
                    number=number,
                    state=TrialState.FAIL if observation.failed else TrialState.COMPLETE,
                    params=typed_assignments(job.space, observation.assignments),
                    reported={**metadata, **constraints},
                    values=None if observation.failed else [by_name[name] for name in job.objectives.names],
                    duration_s=metadata.get("duration_s"),
                    error=metadata.get("error"),
                    key=str(observation.id),
                    finished_at=float(observation.created) if observation.created else None,
                )
            )
        return records

    def pareto_numbers(self, job: SearchJob[SigOptSettings], records: list[TrialRecord]) -> list[int] | None:
        """A multi-metric experiment's best_assignments are its Pareto frontier, matched to the records by
        observation id, or by values where the server gives none (sigoptlite)."""
        experiment_id = self._experiment_id(job)
        if experiment_id is None:
            return None
        best = self._call(
            job,
            lambda: list(
                self.connection(job.settings).experiments(experiment_id).best_assignments().fetch().iterate_pages()
            ),
        )
        by_key = {record.key: record.number for record in records if record.key is not None}
        by_values = {tuple(record.values): record.number for record in records if record.values is not None}
        numbers = set()
        for entry in best:
            values = {value.name: value.value for value in entry.values or []}
            number = (
                by_key.get(str(entry.id))
                if entry.id is not None
                else by_values.get(tuple(values[n] for n in job.objectives.names))
            )
            if number is not None:
                numbers.add(number)
        return sorted(numbers)

    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        """Suggestions from sigoptlite, SigOpt's own optimizer, in memory."""
        connection = self._lite_connection()
        experiment = connection.experiments().create(
            name=f"hpsearch-conformance-{seed}",
            type="offline",
            parameters=native_parameters(space),
            metrics=[{"name": "score", "objective": "maximize"}],
            observation_budget=n,
        )
        samples = []
        for _ in range(n):
            suggestion = connection.experiments(experiment.id).suggestions().create()
            samples.append(typed_assignments(space, suggestion.assignments))
            # Failed observations: sigoptlite keeps drawing from its own space-filling design instead of fitting
            # a model to made-up scores (and stays fast for hundreds of draws).
            connection.experiments(experiment.id).observations().create(suggestion=suggestion.id, failed=True)
        return samples


class ExperimentSource(TrialSource):
    """A SigOpt experiment as a ``TrialSource``: a suggestion per trial, an observation per outcome."""

    def __init__(self, backend: SigOptBackend, job: SearchJob[SigOptSettings], experiment_id: str) -> None:
        self.backend = backend
        self.job = job
        self.experiment_id = experiment_id
        self.experiment = backend.connection(job.settings).experiments(experiment_id)

    def _observations(self) -> list[Any]:
        return self.backend._observations(self.backend.connection(self.job.settings), self.job, self.experiment_id)

    def next(self, train: Train) -> TrialOutcome:
        job = self.job
        if job.settings.driver == "lite":  # without a fresh seed, the same point again and again
            job.seed_global_generators(len(self._observations()))
        suggestion = self.backend._call(job, lambda: self.experiment.suggestions().create())
        assignments, observed = suggestion.assignments, {"suggestion": suggestion.id}
        warm = pending_points(job.warm_start, self.backend.records(job)) if job.warm_start else []
        if warm:  # SigOpt's own suggestion fills in what the point leaves out
            assignments = {**suggestion.assignments, **native_assignments(job.space, warm[0])}
            observed = self._given(suggestion, assignments)
        outcome = train(suggestion, typed_assignments(job.space, assignments))
        metadata: dict[str, Any] = {**outcome.metrics, "duration_s": round(outcome.duration_s or 0.0, 3)}
        if outcome.state is TrialState.COMPLETE:
            values = dict(zip(job.objectives.names, outcome.complete_values, strict=True))
            # a constraint on a parameter this trial left inactive holds: at the threshold
            values.update({c.metric: outcome.metrics.get(c.metric, 0.0) for c in job.space.constraints if c.on_outcome})
            report: dict[str, Any] = {"values": [{"name": n, "value": v} for n, v in values.items()]}
        else:
            report = {"failed": True}
            metadata["error"] = (outcome.error or "")[:400]
        if job.settings.driver != "lite":  # sigoptlite has no observation metadata
            report["metadata"] = metadata
        self.backend._call(job, lambda: self.experiment.observations().create(**observed, **report))
        return outcome

    def _given(self, suggestion: Any, assignments: dict[str, Any]) -> dict[str, Any]:
        """How the observation of a warm-start point names it: a suggestion created with its assignments (SigOpt
        closes the one it drew), or, with sigoptlite, which serves only its own, the assignments themselves."""
        if self.job.settings.driver == "lite":
            return {"assignments": assignments}
        given = self.backend._call(self.job, lambda: self.experiment.suggestions().create(assignments=assignments))
        self.backend._call(self.job, lambda: self.experiment.suggestions(suggestion.id).delete())
        return {"suggestion": given.id}
