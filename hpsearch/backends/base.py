"""The contract every backend implements, what a search hands it, and the helpers backends share.

A backend adapts one search library to hpsearch: it maps the neutral space to its native one, gives out trials,
stores their outcomes and reads them back. The orchestration (``hpsearch.orchestrator``) drives every backend
through one lifecycle and never names a backend:

1. ``backends.backend_settings(backend, cfg.backend)``: the backend's config group (``conf/backend/<name>.yaml``)
   as its typed ``settings_type`` object; a misspelt key or a wrongly typed value is a config error naming it (a
   key of another backend's settings, set by a backend-neutral experiment, is left out).
2. ``validate(settings, objectives, training)``: reject a bad combination before any model or data is loaded,
   and import the backend's package (``self.require``) for a one-line install hint.
3. ``prepare(job)``: create or join the study in the backend's store. Called exactly once per search, before any
   trial, by the process that owns the search: the one process, rank zero under torchrun, or the ``workers=N``
   launcher (its worker processes then join the prepared study without calling it). A new study also queues
   ``job.warm_start``, points to train before any suggestion of the sampler (partial ones: the sampler fills in
   the rest), natively where the library can; a library that cannot has its source train
   ``hpsearch.warm_start.pending_points`` first.
4. ``records(job)``: the orchestration counts the finished trials of a resumed study and starts the trial loop
   from them (``TrialLoop.start``); a study that already holds ``n_trials`` trains nothing.
5. ``search(job, loop)``: by default ``loop.run(self.source(job))``. A backend implements ``source``, a
   ``TrialSource`` (``hpsearch.loop``) whose ``next`` asks for one trial, trains it with the loop's ``train`` and
   tells the store; its docstring says what ``next`` must do about the budget, interruptions and running out.
   A backend whose library schedules trials itself (Ray Tune) overrides ``search`` and passes every trial's
   outcome to ``loop.record`` instead, and stops when ``loop.stopped``.
6. ``records(job)`` again, then ``pareto_numbers(job, records)`` for several objectives; the orchestration writes
   the results files from them, then calls ``finish(job, result)`` (e.g. to tag the best trial's run).

After ``prepare``, the orchestration compares ``stored_definition(job)`` with ``job.definition`` (a rerun with
another space, objectives, model or data is a config error) and, for a new study, calls ``keep_definition``.

Also: ``abandon(job, pid)`` when a worker process died (its RUNNING trial must be failed), ``method(settings)``
for comparisons. ``records`` stands alone: it reads the backend's own store, never state left on the instance,
so it also works in a fresh process, after a crash, or with ``results_only=true``.

Capabilities are class attributes: ``runs_under_torchrun`` (rank zero can drive it while the other ranks follow),
``runs_own_workers`` (it maps ``workers=N`` to its own parallel trials), ``logs_runs_to`` (the tracker it already
logs every trial to, which ``tracking=`` then leaves out). A backend is registered in ``hpsearch/backends/__init__``.
The conformance suite drives its native sampler through ``SamplesNatively.sample``.
"""

from __future__ import annotations

import json
import os
import random
import socket
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Generic

import numpy as np

from hpsearch.errors import ConfigError
from hpsearch.imports import require
from hpsearch.objective import Objectives
from hpsearch.settings import Settings, SettingsT
from hpsearch.space import SearchSpace
from hpsearch.trials import SearchResult, TrialRecord

if TYPE_CHECKING:
    from hpsearch.loop import TrialLoop, TrialSource


def require_in_training_eval(option: str, training: Mapping[str, Any], purpose: str) -> None:
    """Pruners, schedulers and early termination act on evaluations made during training."""
    if str(training.get("eval_strategy", "no")) == "no":
        raise ConfigError(
            f"{option}: {purpose} needs in-training evaluation; set training.eval_strategy=steps and training.eval_steps=N"
        )


def method_name(search: str, early_stopping: str | None) -> str:
    """``tpe``, or ``tpe+median`` with early stopping: a search method as comparisons show it."""
    return search if early_stopping in (None, "none") else f"{search}+{early_stopping}"


@dataclass
class SearchJob(Generic[SettingsT]):
    """One search, as the orchestration hands it to a backend."""

    space: SearchSpace
    objectives: Objectives
    n_trials: int
    seed: int
    study_name: str
    storage: str | None  # optuna's storage URL; None: the backend's default in state_dir
    state_dir: Path  # where backends keep local state, such as a SigOpt experiment id
    run_dir: Path
    settings: SettingsT  # the backend's own config group
    workers: int = 1  # processes training this search's trials at once on this machine
    workers_per_gpu: int | None = None  # workers=auto decided on GPUs: how many of them share each card
    definition: Mapping[str, Any] = field(default_factory=dict)  # what defines the study (hpsearch.definition)
    warm_start: tuple[dict[str, Any], ...] = ()  # typed points a new study trains first (hpsearch.warm_start)

    @property
    def shared(self) -> bool:
        """Other processes may train trials of this study at the same time (workers, other machines)."""
        return self.workers > 1 or self.storage is not None

    def draw_seed(self, stored_trials: int) -> int:
        """The seed of a sampler's next draws: offset by the trials already stored, so that a resumed study does
        not replay its first samples; mixed with the process and machine when others share the study, so that no
        two of them draw the same ones."""
        if not self.shared:
            return self.seed + stored_trials
        process = zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())
        return int(np.random.SeedSequence([self.seed, stored_trials, process]).generate_state(1)[0])

    def seed_global_generators(self, stored_trials: int) -> None:
        """For samplers that draw from Python's and numpy's global generators (W&B's sweeps engine, sigoptlite),
        which transformers' ``set_seed`` resets before every trial: seed both afresh before each draw."""
        seed = self.draw_seed(stored_trials)
        random.seed(seed)
        np.random.seed(seed % 2**32)


class Backend(ABC, Generic[SettingsT]):
    """One search backend; see the module docstring for the lifecycle the orchestration drives."""

    name: ClassVar[str]
    settings_type: ClassVar[type[Settings]]  # filled from conf/backend/<name>.yaml
    package: ClassVar[str]  # pip name, for the install hint
    extra: ClassVar[str | None] = None  # hpsearch extra that installs it
    runs_under_torchrun: ClassVar[bool] = True  # rank zero can drive it while the other ranks follow
    torchrun_hint: ClassVar[str] = ""  # why not, and what to do instead
    logs_runs_to: ClassVar[str | None] = None  # the tracker it logs each trial to itself (tracking= adds nothing)
    runs_own_workers: ClassVar[bool] = False  # maps workers=N to its own parallel trials (no hpsearch processes)

    def settings(self, config: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> SettingsT:
        """The ``backend`` config group as this backend's typed settings (``name`` selects the backend)."""
        return self.settings_type.from_config(config, "backend", ignore=("name", *ignore))  # type: ignore[return-value]

    def require(self, module: str) -> ModuleType:
        """Import this backend's optional dependency, or fail with a one-line install hint."""
        return require(module, f"backend={self.name}", self.package, self.extra)

    def validate(self, settings: SettingsT, objectives: Objectives, training: Mapping[str, Any]) -> None:
        """Reject a bad backend config before any model or data is loaded."""

    @abstractmethod
    def prepare(self, job: SearchJob[SettingsT]) -> None:
        """Create or join the study, once per search, before any trial."""

    def search(self, job: SearchJob[SettingsT], loop: TrialLoop) -> None:
        """Run trials until the study holds ``job.n_trials`` finished ones, the loop stops, or none is left."""
        loop.run(self.source(job))

    def source(self, job: SearchJob[SettingsT]) -> TrialSource:
        """The trials of the prepared study, one at a time, for hpsearch's trial loop."""
        raise NotImplementedError(f"backend={self.name} implements neither source() nor search()")

    @abstractmethod
    def records(self, job: SearchJob[SettingsT]) -> list[TrialRecord]:
        """Every trial of the study, read back from the backend's own store."""

    def pareto_numbers(self, job: SearchJob[SettingsT], records: list[TrialRecord]) -> list[int] | None:
        """The Pareto front's trial numbers as the backend reports it; None: hpsearch computes it."""
        return None

    def finish(self, job: SearchJob[SettingsT], result: SearchResult) -> None:
        """After the results are written: e.g. tag the best trial's run in the backend's own store."""

    def abandon(self, job: SearchJob[SettingsT], pid: int) -> None:
        """Worker process ``pid`` died: record the trial it was training as failed, where the store can."""

    def stored_definition(self, job: SearchJob[SettingsT]) -> dict[str, Any] | None:
        """What defined the study when it was created (``keep_definition``); None for a new study. By default
        ``<storage_dir>/definitions/<backend>-<study_name>.json``; a backend whose store is shared between
        machines keeps it there instead."""
        path = self._definition_file(job)
        return dict(json.loads(path.read_text())) if path.is_file() else None

    def keep_definition(self, job: SearchJob[SettingsT]) -> None:
        path = self._definition_file(job)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(job.definition, sort_keys=True, default=str))

    def _definition_file(self, job: SearchJob[SettingsT]) -> Path:
        return job.state_dir / "definitions" / f"{self.name}-{job.study_name}.json"

    def method(self, settings: SettingsT) -> str:
        """How this configuration searches, in a word or two (``tpe+median``, ``bayes``), for comparisons."""
        return self.name

    def keep_with_study(self, job: SearchJob[SettingsT], kind: str, inside: str = "") -> Path:
        """``<storage_dir>/<kind>/<study_name>``, for files a rerun of the study must find again (a timestamped
        run directory is new each time); ``<run_dir>/<kind>`` links to its ``inside`` folder, to show them."""
        folder = (job.state_dir / kind / job.study_name).resolve()
        (folder / inside).mkdir(parents=True, exist_ok=True)
        link = job.run_dir / kind
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder / inside, target_is_directory=True)
        return folder


class RemembersRemoteStudy(Generic[SettingsT]):
    """For backends whose study lives on a server under an id (a SigOpt experiment, a W&B sweep): the id is kept
    in ``<storage_dir>/<backend>-<study_name>.json``, so that rerunning the same command joins it."""

    name: ClassVar[str]

    def state_file(self, job: SearchJob[SettingsT]) -> Path:
        return job.state_dir / f"{self.name}-{job.study_name}.json"

    def configured_id(self, job: SearchJob[SettingsT], key: str) -> str | None:
        value = getattr(job.settings, key)
        return str(value) if value else None

    def remembered_id(self, job: SearchJob[SettingsT], key: str) -> str | None:
        """The remote study id (``backend.<key>``, or the one this study_name used before), if any."""
        configured = self.configured_id(job, key)
        if configured:
            return configured
        path = self.state_file(job)
        return str(json.loads(path.read_text())[key]) if path.is_file() else None

    def remember_id(self, job: SearchJob[SettingsT], key: str, value: str) -> None:
        job.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file(job).write_text(json.dumps({key: value}))

    def unknown_id(self, job: SearchJob[SettingsT], key: str, value: str) -> ConfigError:
        """A remembered or configured remote id the server does not know (deleted, or another server)."""
        if self.configured_id(job, key):
            return ConfigError(
                f"backend.{key}={value}: the {self.name} server does not know it; check the id and the server, "
                f"or drop backend.{key} to start a new one"
            )
        return ConfigError(
            f"backend.{key}: {value!r}, remembered for study_name={job.study_name} in {self.state_file(job)}, is "
            f"unknown to the {self.name} server; delete that file or pick another study_name to start afresh"
        )


class SamplesNatively(ABC):
    """For the conformance suite only: draw assignments with the backend's own sampler, training nothing."""

    @abstractmethod
    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` typed assignments of ``space``, drawn by the backend's native sampler from ``seed``."""
