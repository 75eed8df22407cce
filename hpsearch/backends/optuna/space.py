"""The neutral space in optuna's terms. optuna's ranges are closed too, so bounds pass through unchanged:

=========================  ===========================================================
neutral                    optuna
=========================  ===========================================================
float [low, high]          ``FloatDistribution(low, high)``
float, log: true           ``FloatDistribution(low, high, log=True)``
float, step: s             ``FloatDistribution(low, high, step=s)``: low, low+s, ..., high
int [low, high], step: s   ``IntDistribution(low, high, step=s)``: high is included
int, log: true             ``IntDistribution(low, high, log=True)``
categorical                ``CategoricalDistribution(choices)``
fixed                      not sampled; its value joins every trial
when: {other: values}      define-by-run: suggested only once ``other`` took one of them
=========================  ===========================================================

Constraints: each trial's ``constraint_<name>`` values go to ``Trial.set_constraint``, which optuna 5's
samplers (TPE, NSGA-II, GP) read to prefer feasible points, and which ``Study.best_trials`` respects.

The grid sampler enumerates categorical choices, int ranges and stepped float ranges, both ends included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpsearch.space import CategoricalParam, FixedParam, FloatParam, IntParam, Param, SearchSpace

if TYPE_CHECKING:
    import optuna


def distribution(param: Param) -> optuna.distributions.BaseDistribution | None:
    """The exact optuna distribution of a neutral parameter; None for fixed ones."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, CategoricalParam):
        return CategoricalDistribution(param.choices)
    return None


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Typed values for every active parameter of ``space``, parents first (define-by-run: an inactive one is
    never suggested); suggesting twice in one trial is idempotent."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    values: dict[str, Any] = {}
    for param in space.in_sampling_order():
        if not space.is_active(param.name, values):
            continue
        native = distribution(param)
        if native is None:
            assert isinstance(param, FixedParam)
            values[param.name] = param.value
        elif isinstance(native, FloatDistribution):
            values[param.name] = trial.suggest_float(
                param.name, native.low, native.high, step=native.step, log=native.log
            )
        elif isinstance(native, IntDistribution):
            values[param.name] = trial.suggest_int(
                param.name, native.low, native.high, step=native.step, log=native.log
            )
        else:
            assert isinstance(native, CategoricalDistribution)
            values[param.name] = trial.suggest_categorical(param.name, native.choices)
    return values
