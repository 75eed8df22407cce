"""``constraints:`` and ``when:``: the expression language, conditions, and what a search does with both."""

from __future__ import annotations

from typing import Any

import pytest

from hpsearch.errors import ConfigError, SearchSpaceError
from hpsearch.loop import INFEASIBLE_DRAWS, FailureBudget
from hpsearch.objective import Objective, Objectives, best_trial, pareto_front
from hpsearch.space import SearchSpace
from hpsearch.trials import INFEASIBLE, TrialRecord, TrialState

SPACE = {
    "per_device_train_batch_size": {"type": "categorical", "choices": [16, 32, 64]},
    "gradient_accumulation_steps": {"type": "int", "low": 1, "high": 8},
    "lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]},
    "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2, "when": {"lr_scheduler_type": "linear"}},
    "warmup_steps": {"type": "int", "low": 0, "high": 10, "when": {"warmup_ratio": [0.0]}},
}


def space(constraints: dict[str, Any] | None = None) -> SearchSpace:
    return SearchSpace.from_config(SPACE, constraints)


@pytest.mark.parametrize(
    ("text", "values", "violation"),
    [
        ("per_device_train_batch_size * gradient_accumulation_steps <= 256", {"b": 0}, None),
        ("per_device_train_batch_size * gradient_accumulation_steps <= 256", {}, -192.0),
        (
            "per_device_train_batch_size * gradient_accumulation_steps <= 256",
            {"accumulate": 8},
            0.0,
        ),  # closed: 256 holds
        ("per_device_train_batch_size * gradient_accumulation_steps <= 200", {"accumulate": 8}, 56.0),
        ("gradient_accumulation_steps >= 2", {"accumulate": 1}, 1.0),
        ("-(gradient_accumulation_steps - 4) ** 2 + 1 >= 0", {"accumulate": 4}, -1.0),
        ("per_device_train_batch_size / 16 <= 2.5", {"accumulate": 1}, -0.5),
        ("warmup_ratio * 10 <= 1", {}, None),  # warmup_ratio inactive in this trial: the constraint holds
    ],
)
def test_a_constraint_is_its_violation(text: str, values: dict[str, Any], violation: float | None) -> None:
    point = {"per_device_train_batch_size": 32, "gradient_accumulation_steps": values.get("accumulate", 2)}
    if "b" in values:
        point.pop("per_device_train_batch_size")  # a parameter the trial does not have (inactive)
    (constraint,) = space({"c": text}).constraints
    assert not constraint.on_outcome
    assert constraint.violation(point) == violation


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("__import__('os').system('true') <= 1", "may hold numbers, names, + - * / ** and parentheses only"),
        ("per_device_train_batch_size.bit_length() <= 1", "may hold numbers, names, + - * / ** and parentheses"),
        ("per_device_train_batch_size < 64", "must compare two sides with one <= or >="),
        ("1 <= per_device_train_batch_size <= 64", "must compare two sides with one <= or >="),
        ("per_device_train_batch_size + 'x' <= 1", "may hold numbers only, not 'x'"),
        ("batch_size <= 64", "['batch_size'] is neither a parameter of the space nor a metric"),
        ("per_device_train_batch_size <=", "is not an expression"),
        (64, "expected an inequality such as 'a * b <= 256', got 64"),
    ],
)
def test_a_bad_constraint_is_one_line_naming_it(text: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        space({"big": text})
    assert str(raised.value).startswith("constraints.big: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_metric_makes_an_outcome_constraint_and_an_unreported_one_is_a_config_error() -> None:
    (constraint,) = space({"latency": "eval_model_latency_ms - per_device_train_batch_size / 8 <= 20"}).constraints
    assert constraint.on_outcome and constraint.metric == "constraint_latency"
    assert constraint.violation({"per_device_train_batch_size": 32, "eval_model_latency_ms": 30.0}) == 6.0
    with pytest.raises(ConfigError, match=r"constraints.latency: the trial reported no \['eval_model_latency_ms'\]"):
        constraint.violation({"per_device_train_batch_size": 32, "eval_accuracy": 0.5})


@pytest.mark.parametrize(
    ("point", "active"),
    [
        ({"lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "warmup_steps": 3}, ["lr_scheduler_type"]),
        (
            {"lr_scheduler_type": "linear", "warmup_ratio": 0.1, "warmup_steps": 3},
            ["lr_scheduler_type", "warmup_ratio"],
        ),
        (
            {"lr_scheduler_type": "linear", "warmup_ratio": 0.0, "warmup_steps": 3},
            ["lr_scheduler_type", "warmup_ratio", "warmup_steps"],
        ),
        ({"lr_scheduler_type": "cosine", "warmup_ratio": 0.0, "warmup_steps": 3}, ["lr_scheduler_type"]),  # transitive
    ],
)
def test_a_parameter_is_active_only_while_its_condition_holds(point: dict[str, Any], active: list[str]) -> None:
    full = {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, **point}
    assert list(space().cast(full)) == ["per_device_train_batch_size", "gradient_accumulation_steps", *active]
    assert list(space().read(full)) == list(space().cast(full))


def test_an_active_parameter_must_come_from_the_backend_an_inactive_one_need_not() -> None:
    point = {"per_device_train_batch_size": 16, "gradient_accumulation_steps": 1, "lr_scheduler_type": "cosine"}
    assert space().cast(point) == point
    with pytest.raises(SearchSpaceError, match=r"backend returned no value for \['warmup_ratio'\]"):
        space().cast({**point, "lr_scheduler_type": "linear"})


def test_parents_are_sampled_before_their_conditional_parameters() -> None:
    order = [param.name for param in SearchSpace.from_config(dict(reversed(SPACE.items()))).in_sampling_order()]
    assert order.index("lr_scheduler_type") < order.index("warmup_ratio") < order.index("warmup_steps")


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ({"scheduler": "linear"}, "space.x.when: 'scheduler' is not a parameter of the space"),
        ({"lr_scheduler_type": "constant"}, "space.x.when: space.lr_scheduler_type can never be 'constant'"),
        ({"gradient_accumulation_steps": [2, 9]}, "space.x.when: space.gradient_accumulation_steps can never be 9"),
        ({"x": 1}, "space.x.when: the conditions of ['x', 'y'] form or hang on a cycle"),
        ({"y": 1}, "space.x.when: the conditions of ['x', 'y'] form or hang on a cycle"),
        ("linear", "space.x.when: expected a mapping such as {other_parameter: value}"),
    ],
)
def test_a_bad_condition_is_one_line_naming_the_key(when: Any, message: str) -> None:
    config = {
        **SPACE,
        "x": {"type": "int", "low": 1, "high": 2, "when": when},
        "y": {"type": "int", "low": 1, "high": 2, "when": {"x": 1}},
    }
    with pytest.raises(SearchSpaceError) as raised:
        SearchSpace.from_config(config)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def _record(number: int, values: list[float], violation: float) -> TrialRecord:
    return TrialRecord(
        number=number, state=TrialState.COMPLETE, params={}, values=values, metrics={"constraint_c": violation}
    )


def test_best_and_pareto_trials_are_feasible_ones() -> None:
    records = [_record(0, [0.9, 5.0], 1.0), _record(1, [0.7, 5.0], 0.0), _record(2, [0.6, 1.0], -2.0)]
    single = [_record(r.number, r.complete_values[:1], r.metrics["constraint_c"]) for r in records]
    best = best_trial(single, Objectives(items=(Objective("eval_accuracy", "maximize"),)))
    assert best is not None and best.number == 1  # trial 0 scored higher, but violated the constraint
    assert [t.number for t in pareto_front(records, ["maximize", "minimize"])] == [1, 2]


def test_infeasible_points_are_redrawn_and_too_many_in_a_row_stop_the_search() -> None:
    failures = FailureBudget(limit=0)
    never_trained = TrialRecord(number=0, state=TrialState.FAIL, params={}, error=INFEASIBLE + "constraints.c: ...")
    for _ in range(INFEASIBLE_DRAWS - 1):
        failures(never_trained)
    assert failures.count == 0 and not failures.exceeded  # a point never trained is no failed trial
    failures(TrialRecord(number=1, state=TrialState.COMPLETE, params={}, values=[1.0]))
    for _ in range(INFEASIBLE_DRAWS):
        failures(never_trained)
    assert failures.infeasible and failures.exceeded
