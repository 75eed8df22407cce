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
from typing import Any

from hpsearch.budget import BUDGET_ENV, TrialBudget
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
            "duration_s": round(outcome.duration_s or 0.0, 3),
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


@dataclass
class Supervision:
    """What the launcher does with what it sees of the pool."""

    read_records: Callable[[], list[TrialRecord]]  # every trial of the search, from the backend's store
    record: Callable[[TrialOutcome], None]  # a trial that ended, seen for the first time
    abandon: Callable[[int], None]  # a worker process died: fail the trial it was training
    stopped: Callable[[], bool]  # no further trial may start (too many failures)


def run_workers(
    target: Target, config: Mapping[str, Any], workers: int, budget: TrialBudget, supervision: Supervision
) -> None:
    """Start ``workers`` processes on ``target`` and supervise them until all have exited."""
    environments = worker_environments(workers, visible_gpus(), os.cpu_count() or 1)
    processes = launch(target, config, environments, budget)
    supervisor = _Supervisor(processes, budget, supervision)
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


class _Supervisor:
    """The launching process's view of the workers: trials read back from the backend's store; a worker that
    died has its trial failed and its claim given back to the others."""

    def __init__(self, processes: Sequence[Any], budget: TrialBudget, supervision: Supervision) -> None:
        self.processes = processes
        self.budget = budget
        self.supervision = supervision
        self.seen: set[int] = {
            record.number for record in supervision.read_records() if record.state is not TrialState.RUNNING
        }
        self.dead: set[int] = set()

    def tick(self) -> None:
        for process in self.processes:
            if process.exitcode not in (None, 0) and process.pid not in self.dead:
                self.dead.add(process.pid)
                print(
                    f"hpsearch: worker process {process.pid} died (exit code {process.exitcode}); "
                    "its trial is failed, the other workers go on",
                    file=sys.stderr,
                )
                self.supervision.abandon(process.pid)
                self.budget.give_back()
        for record in self.supervision.read_records():
            if record.state is not TrialState.RUNNING and record.number not in self.seen:
                self.seen.add(record.number)
                self.supervision.record(record)
        if self.supervision.stopped():
            for process in self.processes:
                process.terminate()


def launch(
    target: Target, config: Mapping[str, Any], environments: Sequence[Mapping[str, str]], budget: TrialBudget
) -> list[Any]:
    """Start one worker process per environment, each calling ``target(config, environment)``."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: CUDA and threads set before import
    processes = []
    for environment in environments:
        process = context.Process(target=target, args=(dict(config), {**environment, BUDGET_ENV: str(budget.path)}))
        process.start()
        processes.append(process)
    return processes
