"""``workers=auto``: how many workers fit this machine, decided from measurements, and their memory shares.

1. **Probe** (``hpsearch.probe``): probe processes train a few steps at the space's most demanding point, alone,
   then k at a time (the kept ones go on as workers): one trial's peak memory (GPU: the caching allocator's peak
   plus the CUDA context; CPU: the process's peak RSS), the free memory, and each count's aggregate throughput.
2. **Decide** (``decide``): the memory bound is ``free x (1 - margin) / per worker``; on CPU the cores bound it too
   (every worker keeps at least one torch thread), and on a GPU machine the cores per GPU. Below that bound, a
   further worker is added only while it raises the measured aggregate throughput by ``min_gain``.
3. **Cap** (``apply_memory_cap``): each GPU worker gets ``torch.cuda.set_per_process_memory_fraction`` of its
   share, so one trial that outgrows it fails alone instead of its neighbours.
4. **Retry** (``DeviceShare``): a trial that runs out of memory in a packed worker is trained again once, alone:
   the other workers on its device finish their trials and wait, and its cap is raised to what is then free.
"""

from __future__ import annotations

import fcntl
import itertools
import math
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.errors import ConfigError

AUTO = "auto"
PACKING_JSON = "packing.json"  # in the run directory: the decision and its figures
SHARE_ENV = "HPSEARCH_DEVICE_SHARE"  # set in a packed worker: "<lock folder>:<memory fraction>"
GIB = 2**30


@dataclass(frozen=True)
class PackingSettings:
    """``packing.*``: how ``workers=auto`` decides (defaults in conf/config.yaml)."""

    margin: float = 0.1  # of the free memory, kept free
    min_gain: float = 0.05  # the aggregate throughput a further worker must add, as a fraction
    probe_steps: int = 8  # training steps each probe times, after 2 warm-up steps
    max_workers: int | None = None  # per GPU, or on CPU in all

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PackingSettings:
        known = set(cls.__dataclass_fields__)
        for key in config:
            if key not in known:
                raise ConfigError(f"packing.{key}: unknown key; the keys are {', '.join(sorted(known))}")
        settings = cls(**config)
        max_workers = settings.max_workers
        checks = (
            ("margin", _is_number(settings.margin) and 0 <= settings.margin < 1, "a number in [0, 1)"),
            ("min_gain", _is_number(settings.min_gain), "a number (0.05: a worker must add 5%)"),
            ("probe_steps", _is_int(settings.probe_steps) and settings.probe_steps >= 1, "an integer >= 1"),
            (
                "max_workers",
                max_workers is None or (_is_int(max_workers) and max_workers >= 1),
                "an integer >= 1, or null",
            ),
        )
        for key, valid, wanted in checks:
            if not valid:
                raise ConfigError(f"packing.{key}: must be {wanted} (got {getattr(settings, key)!r})")
        return settings


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Capacity:
    """What the probe measured of one device (the GPU the probes ran on, or this machine's RAM)."""

    per_worker_bytes: int  # one trial at the most demanding point, the process's own overhead included
    free_bytes: int  # free with no probe running
    total_bytes: int
    cores: int  # on CPU: the cores; on a GPU machine: the cores per GPU
    gpu: bool


@dataclass(frozen=True)
class Decision:
    """How many workers share each device, why, and each one's memory share."""

    per_device: int
    reason: str
    memory_fraction: float | None  # GPU: each worker's cap, as a fraction of the card; None on CPU
    throughputs: Mapping[int, float]  # measured aggregate samples/s by worker count

    def line(self, capacity: Capacity, devices: int) -> str:
        """The decision in one log line, with its figures."""
        where = f"{self.per_device} per GPU x {devices} GPUs" if capacity.gpu else f"{self.per_device} on CPU"
        measured = ", ".join(f"{rate:.1f} samples/s with {count}" for count, rate in sorted(self.throughputs.items()))
        device = "GPU" if capacity.gpu else "RAM"
        return (
            f"workers=auto: {where} (one trial needs {capacity.per_worker_bytes / GIB:.2f} GiB at the space's most "
            f"demanding point, {capacity.free_bytes / GIB:.1f} GiB of {device} free, {capacity.cores} cores; "
            f"measured {measured}; {self.reason})"
        )

    def record(self, capacity: Capacity, devices: int) -> dict[str, Any]:
        """The decision and the figures behind it, as ``packing.json`` keeps them in the run directory."""
        return {
            "workers_per_device": self.per_device,
            "devices": devices if capacity.gpu else 1,
            "device": "gpu" if capacity.gpu else "cpu",
            "reason": self.reason,
            "memory_fraction": self.memory_fraction,
            "samples_per_s": {str(count): rate for count, rate in sorted(self.throughputs.items())},
            "per_worker_bytes": capacity.per_worker_bytes,
            "free_bytes": capacity.free_bytes,
            "total_bytes": capacity.total_bytes,
            "cores": capacity.cores,
        }


def memory_bound(capacity: Capacity, margin: float) -> int:
    """Workers whose peaks fit together in the free memory, ``margin`` of it kept free."""
    return math.floor(capacity.free_bytes * (1 - margin) / max(1, capacity.per_worker_bytes))


def worker_bound(capacity: Capacity, settings: PackingSettings, trials_left: int) -> tuple[int, str]:
    """The most workers one device may take, and what sets that limit."""
    limits = [
        (memory_bound(capacity, settings.margin), "memory"),
        (capacity.cores, "cores"),
        (max(1, trials_left), "trials left"),
    ]
    if settings.max_workers is not None:
        limits.append((settings.max_workers, "packing.max_workers"))
    count, why = min(limits, key=lambda limit: limit[0])
    return count, why


def next_count(bound: int, throughputs: Mapping[int, float], min_gain: float) -> int | None:
    """The next worker count to measure (doubling, then the bound itself), or None once the last count measured
    gained too little or the bound is reached."""
    counts = sorted(throughputs)
    if len(counts) >= 2 and throughputs[counts[-1]] < throughputs[counts[-2]] * (1 + min_gain):
        return None
    largest = counts[-1]
    if largest >= bound:
        return None
    return min(largest * 2, bound)


def decide(
    capacity: Capacity, settings: PackingSettings, trials_left: int, throughputs: Mapping[int, float]
) -> Decision:
    """The worker count per device: the largest measured count whose aggregate throughput rose by ``min_gain``
    over the previous one, within the bound that memory, cores and the trials left set."""
    bound, limited_by = worker_bound(capacity, settings, trials_left)
    if bound < 1:
        raise ConfigError(
            f"workers=auto: one trial at the space's most demanding point needs {capacity.per_worker_bytes / GIB:.2f} "
            f"GiB, more than the {capacity.free_bytes / GIB:.2f} GiB free (packing.margin={settings.margin}); "
            "lower the space's largest batch size or sequence length, or set workers=1"
        )
    chosen, reason = 1, f"{limited_by} allow {bound}"
    for previous, count in itertools.pairwise(sorted(count for count in throughputs if count <= bound)):
        if throughputs[count] < throughputs[previous] * (1 + settings.min_gain):
            reason = f"{count} add less than {settings.min_gain:.0%} throughput to {previous}"
            break
        chosen = count
    else:
        if chosen < bound:
            reason = f"{chosen} is the most measured; {limited_by} allow {bound}"
    fraction = None
    if capacity.gpu:
        fraction = min(1.0, capacity.free_bytes * (1 - settings.margin) / chosen / capacity.total_bytes)
    return Decision(chosen, reason, fraction, dict(throughputs))


def share_environment(folder: Path, decision: Decision) -> dict[str, str]:
    """What a packed worker needs in its environment: where its device's locks live, and its memory cap."""
    if decision.per_device <= 1:
        return {}
    return {SHARE_ENV: f"{folder}:{decision.memory_fraction or 0.0}"}


def apply_memory_cap() -> None:
    """In a packed GPU worker: cap this process at its share of the card, before anything allocates."""
    share = DeviceShare.from_environment()
    if share is None or not share.memory_fraction:
        return
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(share.memory_fraction)


def is_out_of_memory(error: str | None) -> bool:
    """A trial's error line says it ran out of memory (CUDA, or the CPU allocator)."""
    text = (error or "").lower()
    return text.startswith(("outofmemoryerror", "memoryerror")) or "out of memory" in text


@dataclass(frozen=True)
class DeviceShare:
    """One packed worker's device, shared with the other workers there through two locked files.

    Every trial holds the device's ``slots`` lock shared. ``alone()`` holds the ``gate`` (no neighbour starts
    another trial), then takes ``slots`` exclusively (every neighbour's running trial has ended), so the retried
    trial has the device to itself.
    """

    folder: Path
    memory_fraction: float | None

    @classmethod
    def from_environment(cls) -> DeviceShare | None:
        value = os.environ.get(SHARE_ENV)
        if not value:
            return None
        folder, _, fraction = value.rpartition(":")
        return cls(Path(folder), float(fraction) or None)

    def _lock(self, name: str) -> Path:
        device = os.environ.get("CUDA_VISIBLE_DEVICES", "cpu").split(",")[0] or "cpu"
        return self.folder / f"device-{device}.{name}"

    @contextmanager
    def trial(self) -> Iterator[None]:
        """Around each trial: wait while a neighbour retries alone, then share the device."""
        with self._held("gate", fcntl.LOCK_EX):
            slots = self._open("slots")
            fcntl.flock(slots, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(slots, fcntl.LOCK_UN)
            slots.close()
            release_cached_memory()  # a waiting retry needs what this worker's allocator keeps

    @contextmanager
    def alone(self) -> Iterator[None]:
        """The device to this trial alone, its cap raised to what is free once the neighbours are idle."""
        with self._held("gate", fcntl.LOCK_EX), self._held("slots", fcntl.LOCK_EX):
            _set_fraction(_free_fraction())
            try:
                yield
            finally:
                _set_fraction(self.memory_fraction)
                release_cached_memory()

    def _open(self, name: str) -> Any:
        self.folder.mkdir(parents=True, exist_ok=True)
        return self._lock(name).open("a")

    @contextmanager
    def _held(self, name: str, mode: int) -> Iterator[None]:
        with self._open(name) as handle:
            fcntl.flock(handle, mode)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _cuda() -> Any:
    import torch

    return torch.cuda if torch.cuda.is_available() else None


def release_cached_memory() -> None:
    if (cuda := _cuda()) is not None:
        cuda.empty_cache()


def _free_fraction() -> float | None:
    """The card's free memory now, plus what this process holds, as a fraction of the card."""
    if (cuda := _cuda()) is None:
        return None
    free, total = cuda.mem_get_info()
    return float(min(1.0, (free + cuda.memory_reserved()) / total))


def _set_fraction(fraction: float | None) -> None:
    if (cuda := _cuda()) is not None and fraction:
        cuda.set_per_process_memory_fraction(fraction)
