"""``StudySource``: hpsearch's trial loop drives an optuna study through its ask-and-tell interface.

The study itself is the trial budget: a process takes a trial only while fewer than ``n_trials`` are finished,
running or waiting, so any number of processes on any number of machines train ``n_trials`` in total. On a
database storage each running trial sends optuna's heartbeat (``backend.heartbeat_interval_s``); a trial silent
for ``backend.grace_period_s`` (its worker was preempted or killed) is failed by whichever process looks next,
and optuna's ``RetryHeartbeatStaleTrialCallback`` queues it again with the same hyperparameters
(``backend.max_retry`` times). A process with nothing left to take waits up to ``backend.wait_s`` for trials
running elsewhere to finish or go stale, so that none is left RUNNING.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from hpsearch.backends.base import SearchJob
from hpsearch.backends.optuna.space import suggest
from hpsearch.backends.optuna.study import WORKER_HOST, WORKER_PID, WORKER_PID_NAMESPACE, experimental_quiet
from hpsearch.loop import Train, TrialSource
from hpsearch.trials import CONSTRAINT_PREFIX, TrialOutcome, TrialPruned, TrialState

if TYPE_CHECKING:
    import optuna

WAIT_POLL_S = 2.0  # how often a process with nothing to take looks at the study again
SURPLUS = "hpsearch:surplus"  # system attribute of a trial asked for when the budget was already taken
STALE_WHILE_STOPPED = "failed as stale while its process was stopped"


class StudySource(TrialSource):
    """optuna's ask-and-tell interface as a ``TrialSource``, the study being the budget (module docstring)."""

    bounds_trials = True

    def __init__(self, study: optuna.Study, job: SearchJob[Any]) -> None:
        self.study = study
        self.job = job
        self.identity = process_identity()  # this process, as each trial it takes records it
        settings = job.settings
        interval = settings.heartbeat_interval_s or 0
        self.wait_s = float(settings.wait_s if settings.wait_s is not None else settings.grace_period_s + 2 * interval)

    def next(self, train: Train) -> TrialOutcome | None:
        import optuna
        from optuna.storages._heartbeat import get_heartbeat_thread  # the heartbeat study.optimize sends

        trial = self._take()
        if trial is None:
            return None
        try:
            for name, value in self.identity.items():
                trial.set_user_attr(name, value)
            try:
                with get_heartbeat_thread(trial._trial_id, self.study._storage):
                    outcome = train(trial, suggest(trial, self.job.space))
            except BaseException:  # Ctrl-C, a config error: the trial must not stay RUNNING
                if not self._finished_elsewhere(trial):
                    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            self._tell(trial, outcome)
        except optuna.exceptions.UpdateFinishedTrialError:
            # This process was stopped (SIGSTOP, a network partition) for longer than the grace period: another
            # process failed the trial as stale, and optuna's retry callback has queued it again. Drop it.
            print(
                f"hpsearch: trial {trial.number} was failed as stale while this process was stopped; its retry is "
                "already queued, so this trial is dropped",
                file=sys.stderr,
            )
            return TrialOutcome(state=TrialState.FAIL, params=dict(trial.params), error=STALE_WHILE_STOPPED)
        return outcome

    def _tell(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        import optuna

        state = optuna.trial.TrialState[outcome.state.value]
        _store(trial, outcome)
        try:
            self.study.tell(trial, outcome.values if state == optuna.trial.TrialState.COMPLETE else None, state=state)
        except ValueError as refused:  # "Cannot tell a FAIL trial": the trial was finished elsewhere meanwhile
            if self._finished_elsewhere(trial):
                raise optuna.exceptions.UpdateFinishedTrialError(str(refused)) from refused
            raise
        except RuntimeError:
            # A used-up grid makes GridSampler call study.stop(), which raises outside study.optimize once the
            # trial is stored; the next call then finds the grid exhausted.
            if not grid_exhausted(self.study):
                raise

    def _finished_elsewhere(self, trial: optuna.Trial) -> bool:
        """Did another process finish this trial (failed as stale while this one was stopped)?"""
        return self.study._storage.get_trial(trial._trial_id).state.is_finished()

    def report(self, handle: Any, step: int, metrics: dict[str, float]) -> None:
        """Report the objective to optuna's pruner, and stop the trial where it says so."""
        if self.job.objectives.is_multi:  # optuna prunes single-objective studies only
            return
        handle.report(self.job.objectives.values(metrics)[0], step)
        if handle.should_prune():
            raise TrialPruned(f"pruned at step {step}")

    def _take(self) -> optuna.Trial | None:
        """The next trial of the budget, or None once ``n_trials`` are finished (or the grid is used up).

        While every remaining trial runs elsewhere, wait up to ``wait_s`` for one to fail or go stale (a
        preempted worker's trial, failed here and queued again by optuna's retry callback)."""
        import optuna

        states = optuna.trial.TrialState
        deadline = time.monotonic() + self.wait_s
        while not grid_exhausted(self.study):
            with experimental_quiet():
                optuna.storages.fail_stale_trials(self.study)
            self._fail_orphans()
            counts = Counter(trial.state for trial in self.study.get_trials(deepcopy=False))
            finished = counts[states.COMPLETE] + counts[states.PRUNED]
            waiting, running = counts[states.WAITING], counts[states.RUNNING]
            if finished >= self.job.n_trials:
                return None
            if waiting or finished + running < self.job.n_trials:
                with experimental_quiet():
                    trial = self.study.ask()  # takes a waiting (retried) trial first
                if not self._surplus(trial):
                    return trial
                continue
            if time.monotonic() > deadline:
                return None
            time.sleep(WAIT_POLL_S)
        return None

    def _fail_orphans(self) -> None:
        """A running trial of a process on this machine that no longer exists (a killed command; on a storage
        without heartbeats such as the journal file, or before its first heartbeat) can never finish: fail it,
        and where the storage retries stale trials, queue it again."""
        import optuna

        storage, here = self.study._storage, self.identity
        retry = getattr(storage, "get_heartbeat_stale_trial_callback", lambda: None)()
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            pid, host = trial.user_attrs.get(WORKER_PID), here[WORKER_HOST]
            # The same machine and pid namespace: containers that share a host name each have their own pids.
            local = all(trial.user_attrs.get(name) == here[name] for name in (WORKER_HOST, WORKER_PID_NAMESPACE))
            if local and isinstance(pid, int) and not _process_exists(pid):
                failed = fail_running_trial(storage, trial._trial_id, f"its process {pid} on {host} is gone")
                if failed and retry is not None:  # as for a stale heartbeat: queue the same hyperparameters again
                    with experimental_quiet():
                        retry(self.study, storage.get_trial(trial._trial_id))

    def _surplus(self, trial: optuna.Trial) -> bool:
        """Two processes asked for the last trial at the same moment: the one with the higher number (the
        storage numbers trials in order) finds ``n_trials`` ahead of it, fails its trial unseen and waits."""
        import optuna

        ahead = sum(
            other.number < trial.number and other.state != optuna.trial.TrialState.FAIL
            for other in self.study.get_trials(deepcopy=False)
        )
        if ahead < self.job.n_trials:
            return False
        self.study._storage.set_trial_system_attr(trial._trial_id, SURPLUS, True)
        self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return True


def fail_running_trial(storage: optuna.storages.BaseStorage, trial_id: int, error: str) -> bool:
    """Fail a trial whose process is gone, with the reason as its ``error``; False where another process (a
    heartbeat check, another pool's supervisor) finished it first."""
    import optuna

    try:
        storage.set_trial_user_attr(trial_id, "error", error)
        return storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def process_identity() -> dict[str, Any]:
    """Which process trains a trial: its pid, machine and pid namespace (trial user attributes)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux: one pid namespace per machine
        namespace = ""
    return {WORKER_PID: os.getpid(), WORKER_HOST: socket.gethostname(), WORKER_PID_NAMESPACE: namespace}


def grid_exhausted(study: optuna.Study) -> bool:
    import optuna

    return isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _store(trial: optuna.Trial, outcome: TrialOutcome) -> None:
    """Each eval metric as its own user attribute, where optuna-dashboard shows it; each constraint's value also
    as optuna's own constraint, which its samplers and ``best_trials`` read."""
    for name, value in outcome.metrics.items():
        trial.set_user_attr(name, value)
        if name.startswith(CONSTRAINT_PREFIX):
            trial.set_constraint(name.removeprefix(CONSTRAINT_PREFIX), value)
    if outcome.error:
        trial.set_user_attr("error", outcome.error)
