"""The optuna adapter: the exact optuna distribution each neutral parameter maps to, and typed suggestions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpsearch.app import run
from hpsearch.backends.base import SearchJob
from hpsearch.backends.optuna import OptunaBackend, OptunaSettings
from hpsearch.backends.optuna.source import STALE_WHILE_STOPPED, StudySource, process_identity
from hpsearch.backends.optuna.space import distribution, suggest
from hpsearch.objective import Objectives
from hpsearch.space import SearchSpace, parse_param
from hpsearch.trials import TrialOutcome, TrialState

TO_OPTUNA = [
    ({"type": "float", "low": 1e-5, "high": 1e-3, "log": True}, FloatDistribution(1e-5, 1e-3, log=True)),
    ({"type": "float", "low": 0.0, "high": 0.3}, FloatDistribution(0.0, 0.3)),
    ({"type": "float", "low": 0.0, "high": 0.3, "step": 0.1}, FloatDistribution(0.0, 0.3, step=0.1)),
    ({"type": "int", "low": 1, "high": 3}, IntDistribution(1, 3)),
    ({"type": "int", "low": 2, "high": 10, "step": 4}, IntDistribution(2, 10, step=4)),
    ({"type": "int", "low": 8, "high": 256, "log": True}, IntDistribution(8, 256, log=True)),
    ({"type": "categorical", "choices": [16, 32]}, CategoricalDistribution((16, 32))),
    (
        {"type": "categorical", "choices": ["linear", "cosine", None]},
        CategoricalDistribution(("linear", "cosine", None)),
    ),
    ({"type": "fixed", "value": 3}, None),
]


@pytest.mark.parametrize(("spec", "expected"), TO_OPTUNA)
def test_space_maps_to_exact_optuna_distribution(spec: dict, expected: object) -> None:
    assert distribution(parse_param("p", spec)) == expected


def test_optuna_int_range_is_closed_at_both_ends() -> None:
    """range(1, 3) must mean {1, 2, 3}: the high bound is reachable."""
    space = SearchSpace.from_config({"n": {"type": "int", "low": 1, "high": 3}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        seen.add(suggest(trial, space)["n"])
        study.tell(trial, 0.0)
    assert seen == {1, 2, 3}


def test_suggest_returns_typed_values_including_fixed() -> None:
    space = SearchSpace.from_config(
        {
            "lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            "layers": {"type": "int", "low": 1, "high": 4},
            "bs": {"type": "categorical", "choices": [16, 32]},
            "seed": {"type": "fixed", "value": 7},
        }
    )
    trial = optuna.create_study().ask()
    values = suggest(trial, space)
    assert isinstance(values["lr"], float) and isinstance(values["layers"], int)
    assert values["bs"] in (16, 32) and values["seed"] == 7
    assert set(trial.params) == {"lr", "layers", "bs"}


def _study_with_a_running_trial(tmp_path: Path, **attrs: object) -> tuple[StudySource, int]:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "s.log"))))
    trial = study.ask()
    for name, value in attrs.items():
        trial.set_user_attr(name, value)
    settings = OptunaSettings(
        sampler="random",
        sampler_kwargs={},
        pruner="none",
        pruner_kwargs={},
        heartbeat_interval_s=None,
        grace_period_s=1,
        max_retry=0,
        wait_s=0,
    )
    space = SearchSpace.from_config({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    objectives = Objectives.from_config({"objectives": [{"metric": "eval_loss", "direction": "minimize"}]})
    job = SearchJob(
        space=space,
        objectives=objectives,
        n_trials=2,
        seed=0,
        study_name="s",
        storage=None,
        state_dir=tmp_path,
        run_dir=tmp_path,
        settings=settings,
    )
    return StudySource(study, job), trial.number


@pytest.mark.parametrize(("namespace", "state"), [("same", "FAIL"), ("another", "RUNNING")])
def test_a_dead_processs_trial_is_failed_only_within_its_own_pid_namespace(
    tmp_path: Path, namespace: str, state: str
) -> None:
    """Containers may share a host name but not their pids: a pid that is gone here says nothing of another
    container's process, so only a trial of this machine and pid namespace counts as orphaned."""
    here = process_identity()
    gone = 2**22 + 17  # above the kernel's pid limit: no such process
    source, number = _study_with_a_running_trial(
        tmp_path,
        **{
            **here,
            "worker_pid": gone,
            "worker_pid_namespace": here["worker_pid_namespace"] if namespace == "same" else "pid:[1]",
        },
    )
    source._fail_orphans()
    assert source.study.trials[number].state.name == state


def test_a_killed_workers_trial_failed_first_by_another_pool_is_left_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two pools on one study: a worker is killed, and the other pool's heartbeat check fails its trial
    between this supervisor listing the running trials and failing them. The supervisor goes on (no
    ``Cannot tell a FAIL trial``), and the first failure's reason is the one kept."""
    source, number = _study_with_a_running_trial(tmp_path, worker_pid=4242)
    storage, trial_id = source.study._storage, source.study.trials[number]._trial_id
    listed = optuna.Study.get_trials

    def list_then_fail_elsewhere(study: optuna.Study, *args: object, **kwargs: object) -> object:
        trials = listed(study, *args, **kwargs)  # type: ignore[arg-type]
        if storage.get_trial(trial_id).state == optuna.trial.TrialState.RUNNING:
            storage.set_trial_user_attr(trial_id, "error", "stale heartbeat")
            storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        return trials

    monkeypatch.setattr(optuna.Study, "get_trials", list_then_fail_elsewhere)
    OptunaBackend().abandon(source.job, 4242)
    trial = storage.get_trial(trial_id)
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["error"] == "stale heartbeat"


@pytest.mark.parametrize("when", ["before its hyperparameters are drawn", "while it trains"])
def test_a_trial_failed_as_stale_while_its_process_was_stopped_is_dropped(tmp_path: Path, when: str) -> None:
    """SIGSTOP past the grace period: another process fails the trial (and queues its retry). Resumed, this
    process finds it finished, at whatever point it was, and drops it: no traceback, the stored FAIL kept."""
    source, number = _study_with_a_running_trial(tmp_path)
    storage, trial_id = source.study._storage, source.study.trials[number]._trial_id
    fail_elsewhere = functools.partial(storage.set_trial_state_values, trial_id, optuna.trial.TrialState.FAIL)
    taken = optuna.Trial(source.study, trial_id)
    source._take = lambda: taken  # type: ignore[method-assign]
    if when.startswith("before"):
        fail_elsewhere()

    def train(handle: object, params: dict[str, object]) -> TrialOutcome:
        if when.startswith("while"):
            fail_elsewhere()
        return TrialOutcome(state=TrialState.COMPLETE, params=params, values=[0.5])

    outcome = source.next(train)
    assert outcome is not None and outcome.state is TrialState.FAIL and outcome.error == STALE_WHILE_STOPPED
    stored = source.study.trials[number]
    assert stored.state.name == "FAIL" and stored.values is None


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [([], False), (["+backend.sampler_kwargs.n_startup_trials=10"], True), (["backend.sampler=random"], False)],
)
def test_a_tpe_search_all_inside_its_random_start_up_says_so(
    make_config: Callable[..., DictConfig], caplog: pytest.LogCaptureFixture, overrides: list[str], warned: bool
) -> None:
    """optuna's TPE draws its first 10 trials at random: a 2-trial "TPE" search with that setting is a random
    search. Unset, hpsearch starts TPE after half of n_trials (here 1)."""
    run(make_config("experiment=ci", "n_trials=2", *overrides))
    said = [record.getMessage() for record in caplog.records if "draws its first" in record.getMessage()]
    assert bool(said) == warned, said


@pytest.mark.parametrize(
    ("sampler", "options", "n_trials", "expected"),
    [
        ("tpe", {}, 4, {"n_startup_trials": 2}),  # the demo: 2 random trials, then TPE
        ("tpe", {}, 1, {"n_startup_trials": 1}),
        ("tpe", {}, 100, {"n_startup_trials": 10}),  # optuna's own default, for long searches
        ("tpe", {"n_startup_trials": 3}, 4, {"n_startup_trials": 3}),  # a user's choice stands
        ("random", {}, 4, {}),
    ],
)
def test_tpe_starts_after_half_of_a_short_search(
    sampler: str, options: dict[str, int], n_trials: int, expected: dict[str, int]
) -> None:
    from hpsearch.backends.optuna.samplers import sampler_options

    assert sampler_options(sampler, options, n_trials) == expected
