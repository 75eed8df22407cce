"""The measurements behind ``workers=auto`` (``hpsearch.packing``): fresh processes that each train a few steps
at the space's most demanding point, first one alone, then k at once, started together behind a barrier.

A probe trains through the trainer's own ``run_trial`` (the same model, data, adapter and evaluation as every
trial) with ``max_steps`` set, and is recorded nowhere: it is not a trial of the study. Its cost (the processes'
start-up and the steps) is part of the search's wall time.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpsearch.errors import ConfigError, WorkerError
from hpsearch.packing import Capacity, Decision, PackingSettings, decide, next_count, worker_bound
from hpsearch.trials import TrialState
from hpsearch.workers import WORKER_ENV, worker_environments

PROBE_ENV = "HPSEARCH_PROBE"  # set in a probe process: the file its measurement goes to
WARMUP_STEPS = 2  # not timed: the first steps allocate, compile kernels and fill caches
CUDA_CONTEXT_ESTIMATE = 512 * 2**20  # where nvidia-smi cannot say what this process holds beyond torch's allocator
# (the search's config, the probe's environment, the barrier every probe of one round waits at)
ProbeTarget = Callable[[dict[str, Any], dict[str, str], Any], None]


@dataclass(frozen=True)
class ProbeResult:
    """What one probe process measured."""

    peak_bytes: int  # one trial's peak: GPU allocator peak plus the CUDA context, or the process's peak RSS
    free_bytes: int | None  # GPU: the card's free memory with this probe gone; None on CPU (the launcher reads it)
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
    if not cuda:
        return ProbeResult(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, None, None, rate)
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


def report(result: ProbeResult) -> None:
    """In a probe process: hand the measurement to the launcher."""
    Path(os.environ[PROBE_ENV]).write_text(json.dumps(asdict(result)))


def run_probes(
    target: ProbeTarget, config: Mapping[str, Any], environments: Sequence[dict[str, str]]
) -> list[ProbeResult]:
    """Start one probe process per environment, all at once, and wait for their measurements; a probe's own
    hpsearch error (a config or data error) ends the search with its line and code."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(environments))
    with tempfile.TemporaryDirectory(prefix="hpsearch-probe-") as folder:
        paths = [Path(folder) / f"probe-{index}.json" for index in range(len(environments))]
        processes = [
            context.Process(target=target, args=(dict(config), {**environment, PROBE_ENV: str(path)}, barrier))
            for environment, path in zip(environments, paths, strict=True)
        ]
        for process in processes:
            process.start()
        try:
            while any(process.is_alive() for process in processes):
                if any(process.exitcode not in (None, 0) for process in processes):
                    break  # the others would wait at the barrier for ever
                time.sleep(0.2)
        finally:
            for process in processes:
                process.kill()
                process.join()
        for process, path in zip(processes, paths, strict=True):
            if not path.is_file():
                error_file = path.with_suffix(".error")
                if error_file.is_file():
                    reported = json.loads(error_file.read_text())
                    raise WorkerError(reported["message"], reported["exit_code"])
                raise WorkerError(f"workers=auto: a probe process died (exit code {process.exitcode})", 1)
        return [ProbeResult(**json.loads(path.read_text())) for path in paths]


def probe_capacity(
    target: ProbeTarget,
    config: Mapping[str, Any],
    settings: PackingSettings,
    gpus: Sequence[str],
    cores: int,
    trials_left: int,
) -> tuple[Capacity, Decision]:
    """Probe one device (the first GPU, or this machine's CPU): one trial alone for its memory, then doubling
    worker counts while the aggregate throughput rises; decide from what was measured."""

    def environments(count: int) -> list[dict[str, str]]:
        """``count`` workers' environments on the probed device, without a worker index: a probe is no worker."""
        listed = worker_environments(count, gpus[:1], per_device_cores)
        return [{key: value for key, value in environment.items() if key != WORKER_ENV} for environment in listed]

    per_device_cores = max(1, cores // max(1, len(gpus)))
    (alone,) = run_probes(target, config, environments(1))
    free = alone.free_bytes if alone.free_bytes is not None else available_ram()
    total = alone.total_bytes if alone.total_bytes is not None else free
    capacity = Capacity(alone.peak_bytes, free, total, per_device_cores, gpu=bool(gpus))
    bound, _ = worker_bound(capacity, settings, trials_left)
    throughputs = {1: alone.samples_per_s}
    while (count := next_count(bound, throughputs, settings.min_gain)) is not None:
        throughputs[count] = sum(result.samples_per_s for result in run_probes(target, config, environments(count)))
    return capacity, decide(capacity, settings, trials_left, throughputs)


def report_error(message: str, exit_code: int) -> None:
    """In a probe process: the hpsearch error it stopped on, for the launcher to end the search with."""
    Path(os.environ[PROBE_ENV]).with_suffix(".error").write_text(
        json.dumps({"message": message, "exit_code": exit_code})
    )


def available_ram() -> int:
    """This machine's available memory (``MemAvailable``)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
