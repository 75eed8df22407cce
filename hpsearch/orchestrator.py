"""The backend lifecycle, driven the same way for every backend (the contract is in ``hpsearch.backends.base``)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from hpsearch.backends.base import Backend, SearchJob
from hpsearch.definition import check_same_study
from hpsearch.loop import TrialLoop
from hpsearch.results import write_results
from hpsearch.trials import SearchResult, count_finished


@dataclass(frozen=True)
class Orchestrator:
    backend: Backend[Any]
    job: SearchJob[Any]

    def prepare(self) -> int:
        """Create or join the study, once per search, before any trial, and check that a study with trials is
        the same search (``hpsearch.definition``); the trials it already finished."""
        backend, job = self.backend, self.job
        backend.prepare(job)
        records = backend.records(job)
        stored = backend.stored_definition(job)
        if stored is not None and records:
            check_same_study(stored, json.loads(json.dumps(job.definition, default=str)), job.study_name)
        elif stored != job.definition:  # a new study, or one whose runs never trained a trial (a bad data path)
            backend.keep_definition(job)
        return count_finished(records)

    def finished_trials(self) -> int:
        """The study's finished trials, as its store holds them now (a worker joins a prepared study)."""
        return count_finished(self.backend.records(self.job))

    def is_done(self, finished: int) -> bool:
        """A study that already holds ``n_trials`` finished trials trains nothing: say so, in one line."""
        if finished < self.job.n_trials:
            return False
        print(
            f"hpsearch: study_name={self.job.study_name} already has {finished} finished trials "
            f"(n_trials={self.job.n_trials}), so nothing will run; for more, raise n_trials or pick another study_name",
            file=sys.stderr,
        )
        return True

    def search(self, loop: TrialLoop, finished: int) -> None:
        """Train trials through ``loop``, counting from the ``finished`` ones of a resumed study."""
        loop.start(finished)
        self.backend.search(self.job, loop)

    def write_results(self) -> SearchResult:
        """Read every trial back from the backend's store, write the results files, let the backend finish."""
        job = self.job
        records = self.backend.records(job)
        front = self.backend.pareto_numbers(job, records) if job.objectives.is_multi else None
        result = write_results(job.run_dir, records, job.space.names, job.objectives, front)
        self.backend.finish(job, result)
        return result
