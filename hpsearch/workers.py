"""``workers=N``: a pool of N persistent worker processes on this machine, supervised by the launcher.

The launching process gives each worker its devices and starts it on the target that ``run()`` hands it (a
fresh interpreter that runs the search's config again, as a worker). It then watches the pool: the trials the
workers record in the backend's store are passed to the launcher's listeners (one progress display over the
whole search, the failure budget), and a worker that crashes or is killed has its trial failed and its claim
given back, while the others go on. Each worker loads the libraries, the tokenised data and the tokenizer once,
then trains trial after trial through the shared trial loop, claiming each trial first (``hpsearch.budget``), so
that the workers together train no more than ``n_trials``.

Devices: with GPUs, each worker sees one GPU (``CUDA_VISIBLE_DEVICES``), round-robin, and
``workers_per_gpu=K`` packs K workers onto each GPU; on CPU each worker gets its share of the cores.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hpsearch.budget import BUDGET_ENV, TrialBudget
from hpsearch.errors import WorkerError
from hpsearch.trials import TrialOutcome, TrialRecord, TrialState

WORKER_ENV = "HPSEARCH_WORKER"  # set in a worker: its index
POLL_S = 1.0
Target = Callable[[dict[str, Any], dict[str, str]], None]  # (the search's config, the worker's environment)


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


def enter_environment(environment: Mapping[str, str]) -> None:
    """In a fresh worker or probe process: take on its environment. Its torch thread count too, which torch
    fixed when it was imported, before the environment arrived (a worker pickled as a target imports it first)."""
    os.environ.update(environment)
    if threads := environment.get("OMP_NUM_THREADS"):
        import torch

        torch.set_num_threads(int(threads))


class WorkerReport:
    """A trial-loop listener in each worker: one ``workers.jsonl`` line per trial, with the process's torch threads
    and its memory afterwards (RSS, and the GPU memory torch holds), to check that a persistent worker stays flat."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "workers.jsonl"

    def __call__(self, outcome: TrialOutcome) -> None:
        entry = {
            "worker": worker_index(),
            "pid": os.getpid(),
            "state": outcome.state.value,
            "duration_s": round(outcome.duration_s or 0.0, 3),
            "torch_threads": _torch_threads(),
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "cuda_allocated_mb": _cuda_allocated_mb(),
        }
        with self.path.open("a") as handle:  # one short line per write: appends from several workers stay whole
            handle.write(json.dumps(entry) + "\n")


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _cuda_allocated_mb() -> float | None:
    import torch

    return round(torch.cuda.memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None


class ReadyProcess(Protocol):
    """A process already started, waiting to be made a worker (a probe of ``workers=auto`` that the decision kept)."""

    @property
    def environment(self) -> Mapping[str, str]:
        """Its devices: it becomes a worker on the same ones."""

    def adopt(self, config: Mapping[str, Any], environment: dict[str, str]) -> Any:
        """Tell it to work as ``environment``'s worker on ``config``; its process."""


@dataclass
class Supervision:
    """What the launcher does with what it sees of the pool."""

    read_records: Callable[[], list[TrialRecord]]  # every trial of the search, from the backend's store
    record: Callable[[TrialOutcome], None]  # a trial that ended, seen for the first time
    abandon: Callable[[int], None]  # a worker process died: fail the trial it was training
    stopped: Callable[[], bool]  # no further trial may start (too many failures)


def run_workers(
    target: Target,
    config: Mapping[str, Any],
    workers: int,
    budget: TrialBudget,
    supervision: Supervision,
    max_restarts: int,
    shared_environment: Mapping[str, str] | None = None,
    ready: Sequence[ReadyProcess] = (),
) -> None:
    """Start ``workers`` processes on ``target`` and supervise them until all have exited; each gets
    ``shared_environment`` too (a packed worker's device share). A ``ready`` process on a worker's devices is
    that worker instead of a new one.

    A worker that dies (killed, or crashed) has its trial failed and its claim given back, and a new worker takes
    its place on the same devices, up to ``max_restarts`` times in all. A worker that stops on an hpsearch error
    of its own (a config or data error, at start-up) is not restarted: the others are stopped, and its error
    (``WorkerError``, with its exit code and one line) ends the search.
    """
    environments = [
        {**environment, **(shared_environment or {})}
        for environment in worker_environments(workers, visible_gpus(), os.cpu_count() or 1)
    ]
    supervisor = _Supervisor(target, config, budget, supervision, max_restarts)
    waiting = list(ready)
    try:
        for environment in environments:
            supervisor.start(environment, _on_devices_of(environment, waiting))
        while supervisor.alive():
            supervisor.tick()
            time.sleep(POLL_S)
        supervisor.tick()
    finally:
        supervisor.stop()
    if supervisor.error is not None:
        raise supervisor.error


def _on_devices_of(environment: Mapping[str, str], waiting: list[ReadyProcess]) -> ReadyProcess | None:
    """One of the ``waiting`` processes on ``environment``'s GPU (or on the CPU), taken from the list."""
    for process in waiting:
        if process.environment.get("CUDA_VISIBLE_DEVICES") == environment.get("CUDA_VISIBLE_DEVICES"):
            waiting.remove(process)
            return process
    return None


def worker_error_file(budget_path: Path, pid: int) -> Path:
    """Where worker ``pid`` leaves the hpsearch error it stopped on, for the launcher to report."""
    return budget_path.parent / f"error-{pid}.json"


class _Supervisor:
    """The launching process's view of the workers: trials read back from the backend's store; a worker that
    died has its trial failed, its claim given back, and a successor; a worker's own error ends the search."""

    def __init__(
        self,
        target: Target,
        config: Mapping[str, Any],
        budget: TrialBudget,
        supervision: Supervision,
        max_restarts: int,
    ) -> None:
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")  # a fresh interpreter: CUDA and threads set first
        self.target, self.config, self.budget, self.supervision = target, dict(config), budget, supervision
        self.restarts_left = max_restarts
        self.processes: list[tuple[Any, dict[str, str]]] = []  # (process, its environment)
        self.handled: set[int] = set()
        self.stopping = False  # the launcher itself is ending the workers: their exits are no deaths
        self.error: WorkerError | None = None
        self.seen: set[int] = {
            record.number for record in supervision.read_records() if record.state is not TrialState.RUNNING
        }

    def start(self, environment: dict[str, str], ready: ReadyProcess | None = None) -> None:
        """A new worker process as ``environment`` says, or ``ready`` made that worker."""
        environment_with_budget = {**environment, BUDGET_ENV: str(self.budget.path)}
        if ready is not None:
            process = ready.adopt(self.config, environment_with_budget)
        else:
            process = self.context.Process(target=self.target, args=(self.config, environment_with_budget))
            process.start()
        self.processes.append((process, environment))

    def alive(self) -> bool:
        return any(process.is_alive() for process, _ in self.processes)

    def tick(self) -> None:
        for process, environment in list(self.processes):
            if process.exitcode not in (None, 0) and process.pid not in self.handled and not self.stopping:
                self.handled.add(process.pid)
                self._ended(process, environment)
        for record in self.supervision.read_records():
            if record.state is not TrialState.RUNNING and record.number not in self.seen:
                self.seen.add(record.number)
                self.supervision.record(record)
        if self.supervision.stopped():
            self.stop()

    def _ended(self, process: Any, environment: dict[str, str]) -> None:
        """Worker ``process`` exited non-zero: its own error ends the search; a death gets a successor."""
        error_file = worker_error_file(self.budget.path, process.pid)
        if error_file.is_file():
            reported = json.loads(error_file.read_text())
            self.error = WorkerError(reported["message"], reported["exit_code"])
            self.stop()
            return
        self.supervision.abandon(process.pid)
        self.budget.reclaim(process.pid)
        died = f"hpsearch: worker {environment[WORKER_ENV]} (process {process.pid}) died (exit code {process.exitcode})"
        if self.restarts_left > 0:
            self.restarts_left -= 1
            self.start(environment)
            print(f"{died}; its trial is failed and retried, and a new worker takes its place", file=sys.stderr)
        else:
            print(f"{died}; its trial is failed, and no restart is left (max_worker_restarts)", file=sys.stderr)

    def stop(self) -> None:
        """Stop every worker still running (Ctrl-C, SIGTERM, too many failures, a worker's error)."""
        self.stopping = True
        for process, _ in self.processes:
            if process.is_alive():
                process.terminate()
                process.join()
                self.supervision.abandon(process.pid)  # where a worker could not fail its trial itself
