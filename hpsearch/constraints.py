"""``constraints:``: named inequalities over the hyperparameters and the metrics a trial reports.

Config form, one entry per constraint::

    constraints:
      effective_batch: per_device_train_batch_size * gradient_accumulation_steps <= 256
      latency: eval_model_latency_ms <= 20

An expression is numbers, names, ``+ - * / **`` and parentheses, on each side of one ``<=`` or ``>=``. It is
parsed by Python's ``ast`` and evaluated by walking that tree here; nothing is ever passed to ``eval``, since a
config file is not a program. A name of the space makes a **parameter constraint**, checked before training:
an infeasible point is never trained. Any other name is a metric (``eval_*``, or a model metric such as
``num_parameters``), which makes an **outcome constraint**, checked once the trial is evaluated.

Each constraint's value is its violation, ``left - right`` for ``<=`` (``right - left`` for ``>=``): zero or less
is feasible, optuna's convention. A trial records it as the metric ``constraint_<name>``; best and Pareto
trials are feasible ones only. A constraint on a parameter that the trial left inactive (``when:``) holds.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import ConfigError
from hpsearch.model_metrics import MODEL_METRICS
from hpsearch.trials import CONSTRAINT_PREFIX

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_COMPARISONS = {ast.LtE: "<=", ast.GtE: ">="}


@dataclass(frozen=True)
class Constraint:
    name: str
    text: str
    comparison: ast.Compare
    less_or_equal: bool  # the comparison is <= (else >=)
    names: frozenset[str]
    metrics: frozenset[str]  # the names that are no parameter: with any, checked after training, else before it

    @property
    def on_outcome(self) -> bool:
        return bool(self.metrics)

    @property
    def metric(self) -> str:
        """Where a trial records this constraint's violation."""
        return f"{CONSTRAINT_PREFIX}{self.name}"

    def violation(self, values: Mapping[str, Any]) -> float | None:
        """How far ``values`` are outside the constraint (zero or less: feasible); None where a parameter it
        names is inactive in this trial. A metric the trial did not report is a config error."""
        if missing := sorted(self.metrics - set(values)):
            raise ConfigError(
                f"constraints.{self.name}: the trial reported no {missing}; it reported "
                f"{sorted(name for name in values if name.startswith('eval_'))}; fix the name"
            )
        if any(name not in values for name in self.names):
            return None
        comparison = self.comparison
        try:
            left = _evaluate(comparison.left, values)
            right = _evaluate(comparison.comparators[0], values)
        except (ArithmeticError, TypeError, ValueError) as error:
            raise ConfigError(f"constraints.{self.name}: {self.text!r} cannot be computed here ({error})") from None
        return left - right if self.less_or_equal else right - left

    def describe(self, values: Mapping[str, Any]) -> str:
        shown = ", ".join(f"{name}={values[name]!r}" for name in sorted(self.names))
        return f"constraints.{self.name}: {self.text} fails with {shown}"


def parse_constraints(config: Mapping[str, Any], param_names: Collection[str]) -> tuple[Constraint, ...]:
    """The constraints of ``config``; a malformed one, or one on a name that is neither a parameter nor a
    metric, is a config error naming it."""
    return tuple(_parse(str(name), text, param_names) for name, text in config.items())


def _parse(name: str, text: Any, param_names: Collection[str]) -> Constraint:
    key = f"constraints.{name}"
    if not name.isidentifier():
        raise ConfigError(f"{key}: a constraint's name must be a plain identifier; rename it")
    if not isinstance(text, str):
        raise ConfigError(f"{key}: expected an inequality such as 'a * b <= 256', got {text!r}")
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{key}: {text!r} is not an expression; write e.g. 'a * b <= 256'") from None
    if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1 and type(tree.ops[0]) in _COMPARISONS):
        raise ConfigError(f"{key}: {text!r} must compare two sides with one <= or >=")
    names = frozenset(_names(tree, key, text))
    unknown = sorted(n for n in names if n not in param_names and not (n.startswith("eval_") or n in MODEL_METRICS))
    if unknown:
        raise ConfigError(
            f"{key}: {unknown} is neither a parameter of the space nor a metric (eval_*, {sorted(MODEL_METRICS)}); "
            "fix the name"
        )
    return Constraint(
        name=name,
        text=text,
        comparison=tree,
        less_or_equal=isinstance(tree.ops[0], ast.LtE),
        names=names,
        metrics=frozenset(n for n in names if n not in param_names),
    )


def _names(node: ast.AST, key: str, text: str) -> list[str]:
    """Every name of an expression, which must hold only numbers, names and arithmetic."""
    found: list[str] = []
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.append(child.id)
        elif isinstance(child, ast.Constant):
            if not isinstance(child.value, (int, float)) or isinstance(child.value, bool):
                raise ConfigError(f"{key}: {text!r} may hold numbers only, not {child.value!r}")
        elif not isinstance(child, (ast.Compare, ast.BinOp, ast.UnaryOp, ast.Load, *_BINARY, *_UNARY, *_COMPARISONS)):
            raise ConfigError(
                f"{key}: {text!r} may hold numbers, names, + - * / ** and parentheses only "
                f"(found {type(child).__name__})"
            )
    return found


def _evaluate(node: ast.expr, values: Mapping[str, Any]) -> float:
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, (int, float))  # checked when parsed
        return float(node.value)
    if isinstance(node, ast.Name):
        value = values[node.id]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"{node.id}={value!r} is not a number")
        return float(value)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, values), _evaluate(node.right, values))
    assert isinstance(node, ast.UnaryOp)
    return _UNARY[type(node.op)](_evaluate(node.operand, values))
