"""The measurements behind ``workers=auto`` (``hpsearch.packing``): processes that each train a few steps at the
space's most demanding point, first one alone, then k at once.

A probe process builds its trainer once and measures whenever the launcher asks (``ProbePool``), so a round of k
starts only the processes the previous round lacked. A probe trains through the trainer's own ``run_trial`` (the
same model, data, adapter and evaluation as every trial) with ``max_steps`` set, and is recorded nowhere: it is
not a trial of the study. The probes the decision keeps go on as the search's workers, so the search starts no
process twice; the probe's cost (its processes' start-up and its steps) is part of the search's wall time.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

from hpsearch.errors import ConfigError, WorkerError
from hpsearch.packing import Capacity, Decision, PackingSettings, decide, next_count, worker_bound
from hpsearch.trials import TrialState
from hpsearch.workers import WORKER_ENV, enter_environment, rss_bytes, worker_environments

# what a probe process and its launcher say to each other over their pipe
READY, MEASURED, ERROR = "ready", "measured", "error"  # probe -> launcher
MEASURE, WORK, EXIT = "measure", "work", "exit"  # launcher -> probe
WARMUP_STEPS = 2  # not timed: the first steps allocate, compile kernels and fill caches
CUDA_CONTEXT_ESTIMATE = 512 * 2**20  # where nvidia-smi cannot say what this process holds beyond torch's allocator
# (the search's config, the probe's environment, its end of the pipe to the launcher)
ProbeTarget = Callable[[dict[str, Any], dict[str, str], Any], None]


@dataclass(frozen=True)
class ProbeResult:
    """What one probe process measured."""

    peak_bytes: int  # one trial's peak: GPU allocator peak plus the CUDA context, or the process's peak RSS
    free_bytes: int  # with this probe gone: GPU, the card's free memory; CPU, the machine's available memory
    total_bytes: int | None  # GPU: the card's memory
    samples_per_s: float


def _step_timer() -> Any:
    """A callback that times the training steps after the warm-up ones (transformers imported on first use:
    ``import hpsearch`` stays light)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.started: float | None = None
            self.timed_steps = 0
            self.elapsed = 0.0

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == WARMUP_STEPS:
                self.started = time.perf_counter()
            elif self.started is not None:
                self.timed_steps += 1
                self.elapsed = time.perf_counter() - self.started

    return StepTimer()


def probe_point(point: Mapping[str, Any], steps: int) -> dict[str, Any]:
    """The trial a probe trains: the most demanding point, for the warm-up and the timed steps only."""
    return {**point, "max_steps": WARMUP_STEPS + steps}


def measure(trainer: Any, point: Mapping[str, Any], steps: int) -> ProbeResult:
    """In a probe process: train ``point`` for ``steps`` timed steps and read what it took."""
    import torch

    timer = _step_timer()
    trainer.add_callback(timer)
    evaluated = trainer.eval_dataset
    if hasattr(evaluated, "select"):  # one eval batch has the evaluation's peak; the rest only costs time
        trainer.eval_dataset = evaluated.select(range(min(len(evaluated), trainer.args.eval_batch_size)))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    outcome = trainer.run_trial(probe_point(point, steps), constrained=False)  # the most memory, feasible or not
    trainer.remove_callback(timer)
    if outcome.state is TrialState.FAIL and not (outcome.error or "").startswith("objective is NaN"):
        raise ConfigError(
            f"workers=auto: a trial at the space's most demanding point {dict(point)} failed alone ({outcome.error}); "
            "lower the space's largest batch size or sequence length, or set workers=N"
        )
    batch = trainer.args.train_batch_size * trainer.args.gradient_accumulation_steps
    rate = batch * timer.timed_steps / timer.elapsed if timer.elapsed > 0 else 0.0
    if not cuda:  # this probe stays alive (it may go on as a worker): what it holds counts as free
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return ProbeResult(peak, available_ram() + rss_bytes(), None, rate)
    held = _gpu_process_bytes()
    context = max(0, held - torch.cuda.memory_reserved())
    free, total = torch.cuda.mem_get_info()
    return ProbeResult(torch.cuda.max_memory_reserved() + context, free + held, total, rate)


def _gpu_process_bytes() -> int:
    """The GPU memory this process holds (context included), as the driver counts it."""
    import torch

    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
        try:
            listing = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            pid, _, used = line.partition(",")
            if pid.strip() == str(os.getpid()):
                return int(float(used)) * 2**20
    return int(torch.cuda.memory_reserved()) + CUDA_CONTEXT_ESTIMATE


def serve(connection: Any, measure_once: Callable[[], ProbeResult]) -> tuple[dict[str, Any], dict[str, str]] | None:
    """In a probe process, once its trainer is built: measure whenever the launcher asks, at the thread count it
    names, until it hands this process a worker's config and environment (returned) or lets it go (None)."""
    connection.send((READY,))
    while True:
        try:
            message = connection.recv()
        except EOFError:  # the launcher is gone
            return None
        if message[0] == MEASURE:
            enter_environment({"OMP_NUM_THREADS": str(message[1])})
            connection.send((MEASURED, asdict(measure_once())))
        elif message[0] == WORK:
            return message[1], message[2]
        else:
            return None


def report_error(connection: Any, message: str, exit_code: int) -> None:
    """In a probe process: the hpsearch error it stopped on, for the launcher to end the search with."""
    connection.send((ERROR, message, exit_code))


@dataclass
class ProbeProcess:
    """One probe process, kept between rounds; a chosen one goes on as a worker (``adopt``)."""

    process: Any
    connection: Any
    environment: dict[str, str]
    ready: bool = False  # its trainer is built
    adopted: bool = False

    def receive(self, expected: str) -> tuple[Any, ...]:
        """The process's next message, ``expected``; its own hpsearch error, or its death, ends the search."""
        while not self.connection.poll(0.2):
            if not self.process.is_alive():
                self._died()
        try:
            message = self.connection.recv()
        except EOFError:  # its end of the pipe closed with it
            self._died()
        if message[0] == ERROR:
            raise WorkerError(message[1], message[2])
        assert message[0] == expected, message
        return tuple(message)

    def _died(self) -> NoReturn:
        self.process.join(5)
        raise WorkerError(f"workers=auto: a probe process died (exit code {self.process.exitcode})", 1)

    def adopt(self, config: Mapping[str, Any], environment: dict[str, str]) -> Any:
        """Make this probe a worker: it drops its probe trainer and runs ``config`` as worker ``environment``."""
        self.connection.send((WORK, dict(config), environment))
        self.connection.close()
        self.adopted = True
        return self.process


class ProbePool:
    """The probe processes of one device: started as the rounds need them (one, then 2, 4, ...), each building its
    trainer once, and measuring together when told to. Those that the decision keeps become the search's first
    workers on that device, so no process is started twice; ``close`` lets the others go."""

    def __init__(self, target: ProbeTarget, config: Mapping[str, Any], environment: dict[str, str], cores: int):
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.target, self.config, self.environment, self.cores = target, dict(config), environment, cores
        self.members: list[ProbeProcess] = []

    def measure(self, count: int) -> list[ProbeResult]:
        """``count`` probes training the most demanding point at once, the cores shared among them; the first
        ``count`` members measure, new ones are started first (the others wait, idle, meanwhile)."""
        while len(self.members) < count:
            ours, theirs = self.context.Pipe()
            process = self.context.Process(target=self.target, args=(self.config, self.environment, theirs))
            process.start()
            theirs.close()
            self.members.append(ProbeProcess(process, ours, self.environment))
        measuring = self.members[:count]
        for member in measuring:
            if not member.ready:
                member.receive(READY)
                member.ready = True
        for member in measuring:  # every one is built and waiting: they start their steps together
            member.connection.send((MEASURE, max(1, self.cores // count)))
        return [ProbeResult(**member.receive(MEASURED)[1]) for member in measuring]

    def hand_over(self, count: int) -> list[ProbeProcess]:
        """The first ``count`` probes, to be adopted as workers; the others are let go now, so that the memory
        they hold is free before the search starts."""
        _let_go(self.members[count:])
        return self.members[:count]

    def close(self) -> None:
        """Let go of every probe that no worker adopted."""
        _let_go([member for member in self.members if not member.adopted])


def _let_go(members: Sequence[ProbeProcess]) -> None:
    """Tell ``members`` to exit, all at once, and kill any still running after 10 s (one still measuring)."""
    for member in members:
        with contextlib.suppress(OSError):  # it has ended already
            member.connection.send((EXIT,))
    deadline = time.monotonic() + 10
    for member in members:
        member.process.join(max(0.0, deadline - time.monotonic()))
        if member.process.is_alive():
            member.process.kill()
            member.process.join()
        member.connection.close()


def probe_capacity(
    pool: ProbePool, settings: PackingSettings, gpus: Sequence[str], trials_left: int
) -> tuple[Capacity, Decision]:
    """Probe one device (the first GPU, or this machine's CPU): one trial alone for its memory, then doubling
    worker counts while the aggregate throughput rises; decide from what was measured."""
    (alone,) = pool.measure(1)
    total = alone.total_bytes if alone.total_bytes is not None else alone.free_bytes
    capacity = Capacity(alone.peak_bytes, alone.free_bytes, total, pool.cores, gpu=bool(gpus))
    bound, _ = worker_bound(capacity, settings, trials_left)
    throughputs = {1: alone.samples_per_s}
    while (count := next_count(bound, throughputs, settings.min_gain)) is not None:
        throughputs[count] = sum(result.samples_per_s for result in pool.measure(count))
    return capacity, decide(capacity, settings, trials_left, throughputs)


def probe_environment(gpus: Sequence[str], cores: int) -> tuple[dict[str, str], int]:
    """A probe's environment on the probed device (the first GPU, or the CPU), without a worker index: a probe is
    no worker until adopted; and the cores of that device."""
    per_device_cores = max(1, cores // max(1, len(gpus)))
    (environment,) = worker_environments(1, gpus[:1], per_device_cores)
    return {key: value for key, value in environment.items() if key != WORKER_ENV}, per_device_cores


def available_ram() -> int:
    """This machine's available memory (``MemAvailable``)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
