"""``workers=N``: N persistent worker processes on this machine share one search.

The launching process gives each worker its devices, starts them, shows one progress display over the
whole search (read back from the backend's own store), and writes the results files once they are done.
Each worker loads the libraries, the tokenised data and the tokenizer once, then trains trial after trial
through the shared trial loop, claiming each trial first (from a ``TrialBudget``, or from the backend's store
where it is the budget itself, as an optuna study is), so that the workers together train no more than
``n_trials``. A worker that crashes or is killed does not stop the others; its trial is
recorded as failed.

Devices: with GPUs, each worker sees one GPU (``CUDA_VISIBLE_DEVICES``), round-robin, and
``workers_per_gpu=K`` packs K workers onto each GPU; on CPU each worker gets its share of the cores.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.results import write_search_results
from hpsearch.trials import SearchResult, TrialOutcome, TrialState

if TYPE_CHECKING:
    from hpsearch.backends.base import Backend, SearchJob
    from hpsearch.loop import FailureBudget
    from hpsearch.progress import SearchProgress

WORKER_ENV = "HPSEARCH_WORKER"  # set in a worker: its index
BUDGET_ENV = "HPSEARCH_BUDGET"  # set in a worker: the budget file it claims trials from
POLL_S = 1.0


def worker_index() -> int | None:
    """This process's worker index, or None outside a worker."""
    value = os.environ.get(WORKER_ENV)
    return int(value) if value is not None else None


def visible_gpus() -> list[str]:
    """The GPUs this machine offers the search, as ``CUDA_VISIBLE_DEVICES`` names them."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu for gpu in listed.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def worker_count(workers: int | None, workers_per_gpu: int | None, gpus: Sequence[str]) -> int:
    """``workers``, or K workers for each GPU when only ``workers_per_gpu=K`` is set (K on a machine without
    GPUs); 1 by default."""
    if workers is not None:
        return workers
    if workers_per_gpu is not None:
        return workers_per_gpu * max(1, len(gpus))
    return 1


def worker_environments(workers: int, gpus: Sequence[str], cores: int) -> list[dict[str, str]]:
    """Each worker's environment: its GPU, round-robin over ``gpus``, and its share of the CPU cores."""
    threads = str(max(1, cores // workers))
    environments = []
    for index in range(workers):
        environment = {WORKER_ENV: str(index), "OMP_NUM_THREADS": threads}
        if gpus:
            environment["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        environments.append(environment)
    return environments


class TrialBudget:
    """The trials still to train, shared by this machine's workers through a locked file.

    A worker claims one before each trial and gives it back when the trial did not finish (a failed trial
    is retried), so together the workers train no more than the budget.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, path: Path, remaining: int) -> TrialBudget:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"remaining": remaining}))
        return cls(path)

    @contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        with self.path.open("r+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            state = json.loads(handle.read() or "{}")
            yield state
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(state))

    def claim(self) -> bool:
        with self._locked() as state:
            if state["remaining"] <= 0:
                return False
            state["remaining"] -= 1
            return True

    def give_back(self) -> None:
        with self._locked() as state:
            state["remaining"] += 1

    @property
    def remaining(self) -> int:
        return int(json.loads(self.path.read_text())["remaining"])


def worker_budget() -> TrialBudget:
    """In a worker: the budget it claims trials from."""
    return TrialBudget(Path(os.environ[BUDGET_ENV]))


class WorkerReport:
    """A trial-loop listener in each worker: one ``workers.jsonl`` line per trial, with the process's memory
    afterwards (RSS, and the GPU memory torch holds), to check that a persistent worker stays flat."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "workers.jsonl"

    def __call__(self, outcome: TrialOutcome) -> None:
        entry = {
            "worker": worker_index(),
            "pid": os.getpid(),
            "state": outcome.state.value,
            "duration_s": round(outcome.duration_s, 3),
            "rss_mb": round(_rss_bytes() / 2**20, 1),
            "cuda_allocated_mb": _cuda_allocated_mb(),
        }
        with self.path.open("a") as handle:  # one short line per write: appends from several workers stay whole
            handle.write(json.dumps(entry) + "\n")


def _rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _cuda_allocated_mb() -> float | None:
    import torch

    return round(torch.cuda.memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


def run_workers(cfg: Any, backend: Backend, job: SearchJob, progress: SearchProgress, failures: FailureBudget) -> SearchResult:
    """Start ``job.workers`` worker processes on one shared search, show its progress, write its results."""
    from omegaconf import OmegaConf

    backend.prepare(job)
    finished = sum(record.state.finished for record in backend.records(job))
    budget = TrialBudget.create(job.run_dir / "budget.json", max(0, job.n_trials - finished))
    environments = worker_environments(job.workers, visible_gpus(), os.cpu_count() or 1)
    progress.start(finished)
    processes = launch(OmegaConf.to_container(cfg, resolve=True), environments, budget)
    supervisor = _Supervisor(backend, job, processes, progress, failures, budget)
    try:
        while any(process.is_alive() for process in processes):
            supervisor.tick()
            time.sleep(POLL_S)
        supervisor.tick()
    finally:
        for process in processes:  # Ctrl-C or too many failures: stop the workers too
            if process.is_alive():
                process.terminate()
                process.join()
        progress.close()
        result = write_search_results(backend, job)
    return result


class _Supervisor:
    """The launching process's view of the workers: progress over the whole search, read back from the
    backend's store; a worker that died has its trial failed and its claim given back to the others."""

    def __init__(
        self, backend: Backend, job: SearchJob, processes: Sequence[Any], progress: SearchProgress,
        failures: FailureBudget, budget: TrialBudget,
    ) -> None:
        self.backend = backend
        self.job = job
        self.processes = processes
        self.progress = progress
        self.failures = failures
        self.budget = budget
        self.seen: set[int] = {record.number for record in backend.records(job) if record.state is not TrialState.RUNNING}
        self.dead: set[int] = set()

    def tick(self) -> None:
        for process in self.processes:
            if process.exitcode not in (None, 0) and process.pid not in self.dead:
                self.dead.add(process.pid)
                print(f"hpsearch: worker process {process.pid} died (exit code {process.exitcode}); "
                      "its trial is failed, the other workers go on", file=sys.stderr)
                self.backend.abandon(self.job, process.pid)
                self.budget.give_back()
        for record in self.backend.records(self.job):
            if record.state is not TrialState.RUNNING and record.number not in self.seen:
                self.seen.add(record.number)
                outcome = TrialOutcome(record.params, record.state, record.values, record.metrics, record.duration_s or 0.0)
                self.failures(outcome)
                self.progress(outcome)
        if self.failures.exceeded:
            for process in self.processes:
                process.terminate()


def launch(config: Mapping[str, Any], environments: Sequence[Mapping[str, str]], budget: TrialBudget) -> list[Any]:
    """Start one worker process per environment, each running the search from ``config``."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: CUDA and threads set before import
    processes = []
    for environment in environments:
        process = context.Process(target=_worker_main, args=(dict(config), {**environment, BUDGET_ENV: str(budget.path)}))
        process.start()
        processes.append(process)
    return processes


def _worker_main(config: dict[str, Any], environment: dict[str, str]) -> None:
    os.environ.update(environment)
    from omegaconf import OmegaConf

    from hpsearch.app import run
    from hpsearch.errors import HPSearchError

    try:
        run(OmegaConf.create(config))
    except HPSearchError as error:
        print(f"hpsearch: worker {environment[WORKER_ENV]}: error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
