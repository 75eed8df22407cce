"""The contract every backend implements, and what a search hands it."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from hpsearch.errors import ConfigError
from hpsearch.imports import require
from hpsearch.loop import TrialLoop
from hpsearch.objective import Objectives
from hpsearch.space import SearchSpace
from hpsearch.trials import SearchResult, TrialRecord


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
class SearchJob:
    """One search, as the orchestration hands it to a backend."""

    loop: TrialLoop | None  # trains trials and records them; None in the process that only launches workers
    space: SearchSpace
    objectives: Objectives
    n_trials: int
    seed: int
    study_name: str
    storage: str | None  # optuna's storage URL; None: the backend's default in state_dir
    state_dir: Path  # where backends keep local state, such as a SigOpt experiment id
    run_dir: Path
    settings: Mapping[str, Any]  # the backend's own config group
    workers: int = 1  # processes training this search's trials at once on this machine


class Backend(ABC):
    """One search backend. The orchestration calls, in this order:

    1. ``validate(settings, objectives, training)``: reject a bad backend config before any model or data
       is loaded (and import the backend's package, for a one-line install hint).
    2. ``prepare(job)``, with ``workers=N``: create or join the study in the backend's store, once, before the
       worker processes start, so that they all share it; then each worker runs ``search``.
    3. ``search(job)``: run trials through ``job.loop`` until the backend's store holds ``job.n_trials``
       finished ones (``TrialState.finished``), the failure budget is spent, or the backend has no more.
       It resumes whatever the store already holds for ``job.study_name``.
    4. ``records(job)``: every trial, read back from the backend's own store. It stands alone: ``search``
       leaves nothing on the instance for it, so it also works in a fresh process, after a crash.
    5. ``pareto_numbers(job, records)``: for several objectives, the front as the backend reports it
       (None: hpsearch computes it from the records).
    6. ``finish(job, result)``: after the results files are written, e.g. tag the best trial's run.

    ``abandon(job, pid)``: a worker process died; its trials must not stay RUNNING.
    ``method(settings)``: the search method in a word or two, for ``hpsearch compare``.

    Capabilities are class attributes, so the orchestration never names a backend.
    """

    name: ClassVar[str]
    package: ClassVar[str]  # pip name, for the install hint
    extra: ClassVar[str | None] = None  # hpsearch extra that installs it
    runs_under_torchrun: ClassVar[bool] = True  # rank zero can drive it while the other ranks follow
    torchrun_hint: ClassVar[str] = ""  # why not, and what to do instead
    logs_wandb_runs: ClassVar[bool] = False  # logs each trial as a W&B run itself (tracking=wandb adds nothing)
    runs_own_workers: ClassVar[bool] = False  # maps workers=N to its own parallel trials (no hpsearch processes)

    def require(self, module: str) -> ModuleType:
        """Import this backend's optional dependency, or fail with a one-line install hint."""
        return require(module, f"backend={self.name}", self.package, self.extra)

    def validate(self, settings: Mapping[str, Any], objectives: Objectives, training: Mapping[str, Any]) -> None:
        """Reject a bad backend config before any model or data is loaded."""

    def prepare(self, job: SearchJob) -> None:
        """Create or join the study before worker processes start."""

    @abstractmethod
    def search(self, job: SearchJob) -> None:
        """Run trials until the study holds ``job.n_trials`` finished ones."""

    @abstractmethod
    def records(self, job: SearchJob) -> list[TrialRecord]:
        """Every trial of the study, read back from the backend's own store."""

    def pareto_numbers(self, job: SearchJob, records: list[TrialRecord]) -> list[int] | None:
        """The Pareto front's trial numbers as the backend reports it; None: hpsearch computes it."""
        return None

    def finish(self, job: SearchJob, result: SearchResult) -> None:
        """After the results are written: e.g. tag the best trial's run in the backend's own store."""

    def abandon(self, job: SearchJob, pid: int) -> None:
        """Worker process ``pid`` died: record the trial it was training as failed, where the store can."""

    def method(self, settings: Mapping[str, Any]) -> str:
        """How this configuration searches, in a word or two (``tpe+median``, ``bayes``), for comparisons."""
        return self.name

    @abstractmethod
    def sample(self, space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
        """Draw ``n`` typed assignments with the backend's native sampler and no training (conformance suite)."""

    def keep_with_study(self, job: SearchJob, kind: str, inside: str = "") -> Path:
        """``<storage_dir>/<kind>/<study_name>``, for files a rerun of the study must find again (a timestamped
        run directory is new each time); ``<run_dir>/<kind>`` links to its ``inside`` folder, to show them."""
        folder = (job.state_dir / kind / job.study_name).resolve()
        (folder / inside).mkdir(parents=True, exist_ok=True)
        link = job.run_dir / kind
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(folder / inside, target_is_directory=True)
        return folder

    def state_file(self, job: SearchJob) -> Path:
        return job.state_dir / f"{self.name}-{job.study_name}.json"

    def remembered_id(self, job: SearchJob, key: str) -> str | None:
        """The remote study id (a SigOpt experiment, a W&B sweep) this study_name used before, if any."""
        if job.settings.get(key):
            return str(job.settings[key])
        path = self.state_file(job)
        return json.loads(path.read_text())[key] if path.is_file() else None

    def remember_id(self, job: SearchJob, key: str, value: str) -> None:
        """Keep the remote study id, so that rerunning the same command joins it."""
        job.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file(job).write_text(json.dumps({key: value}))

    def unknown_id(self, job: SearchJob, key: str, value: str) -> ConfigError:
        """A remembered or configured remote id the server does not know (deleted, or another server)."""
        if job.settings.get(key):
            return ConfigError(
                f"backend.{key}={value}: the {self.name} server does not know it; check the id and the server, "
                f"or drop backend.{key} to start a new one"
            )
        return ConfigError(
            f"backend.{key}: {value!r}, remembered for study_name={job.study_name} in {self.state_file(job)}, is "
            f"unknown to the {self.name} server; delete that file or pick another study_name to start afresh"
        )
