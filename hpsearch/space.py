"""The backend-neutral search space.

Every range is closed: a parameter with ``low`` and ``high`` may take both bounds.
Each backend adapter maps these types to its native objects and documents how.

Config form (``conf/space/*.yaml``), one entry per parameter::

    learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    warmup_ratio:  {type: float, low: 0.0, high: 0.2, step: 0.05}
    num_train_epochs: {type: int, low: 1, high: 3}
    per_device_train_batch_size: {type: categorical, choices: [16, 32]}
    seed: {type: fixed, value: 42}
    warmup_ratio: {type: float, low: 0.0, high: 0.2, when: {lr_scheduler_type: linear}}

``when: {other: value}`` (or ``{other: [values]}``) makes a parameter conditional: it is active, sampled and
trained with, only while ``other`` is active and takes one of those values; otherwise the trial has no value for
it at all. optuna samples it define-by-run; a backend that cannot condition natively samples it and hpsearch
drops it (``SearchSpace.active``). A condition on an unknown parameter, on a value the other can never take, or
in a cycle is a config error.

or a Hydra sweep string, translated as the hydra-optuna-sweeper does (``hpsearch/sweeper_syntax.py``)::

    learning_rate: tag(log, interval(1e-5, 1e-3))
    per_device_train_batch_size: choice(16, 32, 64)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hpsearch.constraints import Constraint, parse_constraints
from hpsearch.errors import SearchSpaceError
from hpsearch.sweeper_syntax import spec_from_sweep

ChoiceValue = None | bool | int | float | str
_FLOAT_TOLERANCE = 1e-9


def _fail(name: str, message: str) -> SearchSpaceError:
    return SearchSpaceError(f"space.{name}: {message}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class FloatParam:
    name: str
    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        if not (_is_number(self.low) and _is_number(self.high)):
            raise _fail(self.name, f"low and high must be numbers (low={self.low!r}, high={self.high!r})")
        if self.low > self.high:
            raise _fail(self.name, f"low must be <= high (low={self.low}, high={self.high}); swap the bounds")
        if self.log and self.low <= 0:
            raise _fail(
                self.name,
                f"log scale needs low > 0 (low={self.low}, high={self.high}); raise low or set log: false",
            )
        if self.step is not None:
            if self.log:
                raise _fail(self.name, f"step and log cannot be combined (step={self.step}); drop one")
            if not _is_number(self.step) or self.step <= 0:
                raise _fail(self.name, f"step must be a number > 0 (step={self.step!r})")
            if not _is_multiple(self.high - self.low, self.step):
                raise _fail(
                    self.name,
                    f"high - low must be a multiple of step (low={self.low}, high={self.high}, step={self.step})",
                )

    @property
    def on_multiples_of_step(self) -> bool:
        """Stepped, with low a multiple of step: rounding to multiples of step (Ray, W&B) stays on this grid."""
        return self.step is not None and _is_multiple(self.low, self.step)

    def values(self) -> list[float]:
        """The stepped values low, low + step, ..., high."""
        assert self.step is not None
        return [self.low + k * self.step for k in range(round((self.high - self.low) / self.step) + 1)]

    def extremes(self) -> tuple[Any, ...]:
        """The values at the ends of the parameter's range (every value, where there are only a few)."""
        return (self.low, self.high)

    def cast(self, value: Any) -> float:
        return float(value)

    def admits(self, value: Any) -> bool:
        if not isinstance(value, float):
            return False
        slack = _FLOAT_TOLERANCE * max(1.0, abs(self.high))
        if not self.low - slack <= value <= self.high + slack:
            return False
        return self.step is None or _is_multiple(value - self.low, self.step)


@dataclass(frozen=True)
class IntParam:
    name: str
    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        for key in ("low", "high", "step"):
            value = getattr(self, key)
            if not _is_number(value) or int(value) != value:
                raise _fail(self.name, f"{key} must be an integer ({key}={value!r})")
            object.__setattr__(self, key, int(value))
        if self.low > self.high:
            raise _fail(self.name, f"low must be <= high (low={self.low}, high={self.high}); swap the bounds")
        if self.log and self.low < 1:
            raise _fail(
                self.name,
                f"log scale needs low >= 1 (low={self.low}, high={self.high}); raise low or set log: false",
            )
        if self.step < 1:
            raise _fail(self.name, f"step must be >= 1 (step={self.step})")
        if self.log and self.step != 1:
            raise _fail(self.name, f"step and log cannot be combined (step={self.step}); drop one")
        if (self.high - self.low) % self.step:
            raise _fail(
                self.name,
                f"high - low must be a multiple of step (low={self.low}, high={self.high}, step={self.step})",
            )

    def values(self) -> list[int]:
        """The stepped values low, low + step, ..., high."""
        return list(range(self.low, self.high + 1, self.step))

    def extremes(self) -> tuple[Any, ...]:
        return (self.low, self.high)

    def cast(self, value: Any) -> int:
        number = float(value)
        if number != round(number):
            raise _fail(self.name, f"backend returned a non-integer value {value!r}")
        return round(number)

    def admits(self, value: Any) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and self.low <= value <= self.high
            and (value - self.low) % self.step == 0
        )


@dataclass(frozen=True)
class CategoricalParam:
    name: str
    choices: tuple[ChoiceValue, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.choices:
            raise _fail(self.name, "choices must not be empty; list at least one value")
        for choice in self.choices:
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise _fail(self.name, f"choices must be None, bool, int, float or str (got {choice!r})")
        if len({(type(c), c) for c in self.choices}) != len(self.choices):
            raise _fail(self.name, f"choices must be distinct (choices={list(self.choices)})")
        if len({str(c) for c in self.choices}) != len(self.choices):
            raise _fail(self.name, f"choices must differ as strings too (choices={list(self.choices)})")

    def extremes(self) -> tuple[Any, ...]:
        return self.choices

    def cast(self, value: Any) -> ChoiceValue:
        """Map a backend's value back to the declared choice; backends that speak strings need this."""
        for choice in self.choices:
            if type(choice) is type(value) and choice == value:
                return choice
        for choice in self.choices:
            if str(choice) == str(value):
                return choice
        raise _fail(self.name, f"backend returned {value!r}, which is not one of choices={list(self.choices)}")

    def admits(self, value: Any) -> bool:
        return any(type(choice) is type(value) and choice == value for choice in self.choices)


@dataclass(frozen=True)
class FixedParam:
    name: str
    value: Any

    def extremes(self) -> tuple[Any, ...]:
        return (self.value,)

    def cast(self, value: Any) -> Any:
        return self.value

    def admits(self, value: Any) -> bool:
        return bool(value == self.value)


Param = FloatParam | IntParam | CategoricalParam | FixedParam

_TYPES: dict[str, tuple[type, set[str], set[str]]] = {
    # type name: (class, required keys, optional keys)
    "float": (FloatParam, {"low", "high"}, {"log", "step"}),
    "int": (IntParam, {"low", "high"}, {"log", "step"}),
    "categorical": (CategoricalParam, {"choices"}, set()),
    "fixed": (FixedParam, {"value"}, set()),
}


def _is_multiple(span: float, step: float) -> bool:
    ratio = span / step
    return math.isclose(ratio, round(ratio), rel_tol=0.0, abs_tol=1e-6)


def parse_param(name: str, spec: Any) -> Param:
    if isinstance(spec, str):
        spec = spec_from_sweep(name, spec)
    if not isinstance(spec, Mapping):
        raise _fail(name, f"expected a mapping with a 'type' key or a Hydra sweep string, got {spec!r}")
    kind = spec.get("type")
    if kind not in _TYPES:
        raise _fail(name, f"type must be one of {sorted(_TYPES)} (got {kind!r})")
    cls, required, optional = _TYPES[kind]
    keys = set(spec) - {"type"}
    if missing := required - keys:
        raise _fail(name, f"type {kind} needs {sorted(missing)}")
    if unknown := keys - required - optional:
        raise _fail(name, f"unknown key(s) {sorted(unknown)} for type {kind}; allowed: {sorted(required | optional)}")
    kwargs = {key: spec[key] for key in keys}
    if "choices" in kwargs:
        if isinstance(kwargs["choices"], (str, bytes)) or not hasattr(kwargs["choices"], "__iter__"):
            raise _fail(name, f"choices must be a list (got {kwargs['choices']!r})")
        kwargs["choices"] = tuple(kwargs["choices"])
    if "log" in kwargs and not isinstance(kwargs["log"], bool):
        raise _fail(name, f"log must be true or false (got {kwargs['log']!r})")
    param: Param = cls(name=name, **kwargs)
    return param


def as_declared(param: Param, value: Any) -> Any:
    """A value written in a config (``0`` for a float, ``2.0`` for an int) as the parameter's own type."""
    if isinstance(param, FloatParam) and _is_number(value):
        return float(value)
    if isinstance(param, IntParam) and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _without_condition(spec: Any) -> Any:
    return {key: value for key, value in spec.items() if key != "when"} if isinstance(spec, Mapping) else spec


Conditions = Mapping[str, Mapping[str, tuple[Any, ...]]]  # parameter: {parent: the parent's values that activate it}


def _same(value: Any, other: Any) -> bool:
    return type(value) is type(other) and bool(value == other)


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    conditions: Conditions = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any], constraints: Mapping[str, Any] | None = None) -> SearchSpace:
        """The space of ``config`` (``cfg.space``), with the ``constraints`` of ``cfg.constraints``."""
        if not config:
            raise SearchSpaceError("space: the search space is empty; declare at least one parameter")
        conditions = {
            str(name): spec["when"] for name, spec in config.items() if isinstance(spec, Mapping) and "when" in spec
        }
        space = cls(tuple(parse_param(str(name), _without_condition(spec)) for name, spec in config.items()))
        return cls(
            space.params,
            {name: space._condition(name, when) for name, when in conditions.items()},
            parse_constraints(constraints or {}, space.names),
        )._check_acyclic()

    def _condition(self, name: str, when: Any) -> dict[str, tuple[Any, ...]]:
        key = f"space.{name}.when"
        if not isinstance(when, Mapping) or not when:
            raise SearchSpaceError(f"{key}: expected a mapping such as {{other_parameter: value}}, got {when!r}")
        condition = {}
        for parent, allowed in when.items():
            if parent not in self.names:
                raise SearchSpaceError(f"{key}: {parent!r} is not a parameter of the space; known: {self.names}")
            param = self[parent]
            values = [as_declared(param, value) for value in (allowed if isinstance(allowed, list) else [allowed])]
            for value in values:
                if not param.admits(value):
                    raise SearchSpaceError(
                        f"{key}: space.{parent} can never be {value!r}; use values it takes ({param.extremes()})"
                    )
            condition[str(parent)] = tuple(values)
        return condition

    def _check_acyclic(self) -> SearchSpace:
        self.in_sampling_order()
        return self

    def in_sampling_order(self) -> list[Param]:
        """Every parameter after those its condition names (define-by-run samples parents first)."""
        ordered: list[Param] = []
        placed: set[str] = set()
        remaining = list(self.params)
        while remaining:
            ready = [p for p in remaining if all(parent in placed for parent in self.conditions.get(p.name, {}))]
            if not ready:
                names = sorted(p.name for p in remaining)
                raise SearchSpaceError(
                    f"space.{names[0]}.when: the conditions of {names} form or hang on a cycle; break it"
                )
            ordered += ready
            placed.update(p.name for p in ready)
            remaining = [p for p in remaining if p.name not in placed]
        return ordered

    def is_active(self, name: str, values: Mapping[str, Any]) -> bool:
        """Whether ``name``'s condition holds for ``values`` (parents chosen so far), transitively."""
        return all(
            parent in values
            and self.is_active(parent, values)
            and any(_same(values[parent], value) for value in allowed)
            for parent, allowed in self.conditions.get(name, {}).items()
        )

    def active(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` without the parameters whose condition fails: what a trial trains with and records."""
        return {name: value for name, value in values.items() if self.is_active(name, values)}

    def constraint_values(self, values: Mapping[str, Any], on_outcome: bool = True) -> dict[Constraint, float]:
        """Each constraint's value (its violation where > 0) for ``values``: the parameter constraints, and with
        ``on_outcome`` the outcome ones too (``values`` then holds the trial's metrics)."""
        found = {}
        for constraint in self.constraints:
            if on_outcome or not constraint.on_outcome:
                violation = constraint.violation(values)
                if violation is not None:
                    found[constraint] = violation
        return found

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [param.name for param in self.params]

    @property
    def tunable(self) -> list[Param]:
        return [param for param in self.params if not isinstance(param, FixedParam)]

    def cast(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Typed values for every active parameter, fixed ones included, from a backend's raw assignment; an
        inactive one is dropped, whether or not the backend sampled it."""
        typed = {
            p.name: p.cast(values.get(p.name)) for p in self.params if p.name in values or isinstance(p, FixedParam)
        }
        missing = [p.name for p in self.tunable if p.name not in values and self.is_active(p.name, typed)]
        if missing:
            raise SearchSpaceError(f"space: backend returned no value for {missing}")
        return self.active(typed)

    def single_values(self) -> dict[str, Any]:
        """The parameters that can take one value only (fixed, one choice, ``low == high``), with that value."""
        values: dict[str, Any] = {}
        for param in self.params:
            if isinstance(param, FixedParam):
                values[param.name] = param.value
            elif isinstance(param, CategoricalParam):
                if len(param.choices) == 1:
                    values[param.name] = param.choices[0]
            elif param.low == param.high:
                values[param.name] = param.low
        return values

    def read(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Typed values, in the space's order, from a trial's stored config: keys outside the space are dropped,
        parameters with a single value (which some backends never store) are filled in, and a parameter the
        trial never received (it was stopped first) stays missing."""
        values = {**self.single_values(), **config}
        return self.active(
            {param.name: param.cast(values[param.name]) for param in self.params if param.name in values}
        )

    def grid(self, key: str) -> dict[str, list[Any]]:
        """Every value of every tunable parameter, both ends included; ``key`` names the option needing it."""
        points: dict[str, list[Any]] = {}
        for param in self.tunable:
            if isinstance(param, CategoricalParam):
                points[param.name] = list(param.choices)
            elif (isinstance(param, IntParam) and not param.log) or (isinstance(param, FloatParam) and param.step):
                points[param.name] = param.values()
            else:
                raise SearchSpaceError(
                    f"{key}: space.{param.name} has no finite grid; give it a step or make it categorical"
                )
        return points

    def representative(self) -> dict[str, Any]:
        """One valid value per parameter (low bound, first choice), to build a model before any trial."""
        return {
            param.name: param.value
            if isinstance(param, FixedParam)
            else param.choices[0]
            if isinstance(param, CategoricalParam)
            else param.low
            for param in self.params
        }

    def most_demanding(self) -> dict[str, Any]:
        """The point that needs the most memory, as far as a space can tell: every number at its high end, every
        categorical at its largest number (its first choice where none is a number). ``workers=auto`` probes it."""

        def largest(param: Param) -> Any:
            if isinstance(param, FixedParam):
                return param.value
            if isinstance(param, CategoricalParam):
                numbers = [
                    choice for choice in param.choices if isinstance(choice, (int, float)) and _is_number(choice)
                ]
                return max(numbers) if numbers else param.choices[0]
            return param.high

        return {param.name: largest(param) for param in self.params}

    def fixed(self, values: Mapping[str, Any]) -> SearchSpace:
        """The same space with every parameter of ``values`` fixed to its value (used to re-run a best trial)."""
        return SearchSpace(tuple(FixedParam(p.name, values[p.name]) for p in self.params if p.name in values))
