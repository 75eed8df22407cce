"""DDP searches under ``torchrun``: rank zero samples every trial and every other rank follows its decisions.

Rank zero runs the backend (optuna, SigOpt or W&B) as in a single process. Over a separate gloo control
group, with a bounded timeout, it broadcasts its decisions and gathers each rank's result:

- ``Message(Decision.TRIAL, params)``: the next trial's hyperparameters; every rank builds its model from them
  and trains;
- ``Decision.CONTINUE`` / ``Decision.PRUNE``: after each in-training evaluation, whether to stop this trial now;
- after each trial, every rank sends a ``RankReport`` (state, error, trained values, model facts); a failure on
  any rank fails the trial for all;
- a rank that raises mid-training (when the others may be waiting in a gradient all-reduce) leaves the job
  at once, rank zero after recording the trial as failed; torchrun then stops the group, or restarts it
  under ``--max-restarts`` and the restarted rank zero resumes the study. Rank zero ignores torchrun's
  SIGTERM, so that it records the trial it was training: the other ranks' exit ends its collectives;
- ``Decision.STOP``: no more trials; then a barrier, so no rank exits while another still talks.

Non-zero ranks never count trials themselves, so optuna timeouts, resumed studies and pruning cannot
make them disagree with rank zero. ``training.ddp_timeout`` bounds every collective, gloo's included.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from typing import Any

from hpsearch.errors import CollectiveTimeout
from hpsearch.trials import TrialState


class Decision(Enum):
    """What rank zero tells the other ranks."""

    TRIAL = "trial"  # train the trial whose hyperparameters come with it
    CONTINUE = "continue"  # after an in-training evaluation: go on
    PRUNE = "prune"  # after an in-training evaluation: stop this trial
    STOP = "stop"  # no more trials


@dataclass(frozen=True)
class Message:
    decision: Decision
    params: dict[str, Any] = field(default_factory=dict)  # with Decision.TRIAL


@dataclass(frozen=True)
class RankReport:
    """One rank's account of a trial, gathered on rank zero (``ranks.jsonl``)."""

    state: TrialState
    error: str | None
    trained: dict[str, Any]  # each hyperparameter as this rank really used it
    model: dict[str, str]  # the wrapper class and a parameter checksum


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


class Coordinator:
    """The control channel between rank zero and the other ranks."""

    def __init__(self, timeout_s: float, use_cpu: bool = False) -> None:
        import torch
        import torch.distributed as dist

        self.dist = dist
        self.timeout = timedelta(seconds=timeout_s)
        if not dist.is_initialized():
            # Initialised here, before TrainingArguments, so the timeout applies to gloo as well as NCCL.
            backend = "nccl" if torch.cuda.is_available() and not use_cpu else "gloo"
            store, rank, size = next(dist.rendezvous("env://", timeout=self.timeout))  # type: ignore[attr-defined]
            # torchrun keeps its store across --max-restarts: a group restarted with the same keys would
            # read the previous attempt's (dead) addresses, so each attempt gets keys of its own.
            attempt = dist.PrefixStore(f"hpsearch/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)  # type: ignore[attr-defined]
            dist.init_process_group(backend=backend, store=attempt, rank=rank, world_size=size, timeout=self.timeout)
        self.group = dist.new_group(backend="gloo", timeout=self.timeout)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        if self.is_leader:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def _guard(self, what: str, collective: Any) -> Any:
        try:
            return collective()
        except RuntimeError as error:  # gloo reports timeouts and closed peers as RuntimeError
            raise CollectiveTimeout(
                f"training.ddp_timeout: rank {self.rank} waited more than {self.timeout.total_seconds():.0f}s "
                f"for {what}; another rank crashed or hangs ({str(error).splitlines()[0][:200]})"
            ) from None

    def decide(self, message: Message | None = None) -> Message:
        """Rank zero passes its decision; every rank returns it."""
        box = [message if self.is_leader else None]
        self._guard("rank zero's decision", lambda: self.dist.broadcast_object_list(box, src=0, group=self.group))
        decided = box[0]
        assert isinstance(decided, Message)
        return decided

    def gather(self, report: RankReport) -> list[RankReport]:
        """Every rank's report, in rank order, on every rank."""
        reports: list[Any] = [None] * self.world_size
        self._guard(
            "the other ranks' trial results", lambda: self.dist.all_gather_object(reports, report, group=self.group)
        )
        return reports

    def close(self) -> None:
        self._guard("the final barrier", lambda: self.dist.barrier(group=self.group))
        self.dist.destroy_process_group()
