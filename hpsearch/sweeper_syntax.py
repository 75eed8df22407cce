"""Hydra's sweeper syntax for a space entry: ``learning_rate: tag(log, interval(1e-5, 1e-3))``.

A string is parsed by Hydra's own override parser and translated as the hydra-optuna-sweeper translates it,
so a ``params:`` block of an ``hparams_search`` config comes over unchanged (only its keys are renamed to
where hpsearch sends each parameter):

====================================  ==============================================================
``interval(a, b)``                    float in ``[a, b]`` (Hydra's ``interval`` always gives floats)
``int(interval(a, b))``               int in ``[a, b]``
``tag(log, interval(a, b))``          float on a log scale; with ``int(...)`` an int on a log scale
``range(a, b)``, ``range(a, b, s)``   int in ``[a, b]``, stepped by ``s``: the sweeper's closed range
``range`` with a float anywhere       float in ``[a, b]`` stepped by ``s``
``shuffle(range(...))``               categorical over Hydra's range (``b`` left out), sorted
``choice(x, y, ...)``                 categorical
====================================  ==============================================================

A plain value (``0.5``) is not a sweep and is an error: the sweeper would fix it, but in hpsearch a fixed
value belongs under ``training:``, or in the space as ``{type: fixed, value: 0.5}``, where it reads as meant.
Other tags are ignored, as the sweeper ignores them; a sweep it cannot translate (``glob``) is an error.
"""

from __future__ import annotations

from typing import Any

from hpsearch.errors import SearchSpaceError


def spec_from_sweep(name: str, text: str) -> dict[str, Any]:
    """The neutral spec (``{type: float, low: ..., high: ...}``) of a Hydra sweep string."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_override(f"parameter={text}")
        value = override.value()
    except HydraException as error:
        raise SearchSpaceError(
            f"space.{name}: {text!r} is neither a mapping nor a Hydra sweep ({str(error).splitlines()[0]}); "
            "write e.g. 'interval(0.0001, 0.1)' or 'choice(16, 32)'"
        ) from None
    if not override.is_sweep_override():
        raise SearchSpaceError(
            f"space.{name}: expected a mapping with a 'type' key or a Hydra sweep string, got {text!r}; "
            f"write {{type: fixed, value: {text}}} for a fixed value, or a sweep such as 'choice({text})'"
        )
    if isinstance(value, ChoiceSweep):
        return {"type": "categorical", "choices": list(value.list)}
    if isinstance(value, RangeSweep) and value.shuffle:  # Hydra's range (stop left out) as the choices
        return {"type": "categorical", "choices": sorted(override.sweep_iterator())}
    if isinstance(value, RangeSweep):
        numbers = (value.start, value.stop, value.step)
        kind = "float" if any(isinstance(number, float) for number in numbers) else "int"
        return {"type": kind, "low": value.start, "high": value.stop, "step": value.step}
    if isinstance(value, IntervalSweep):
        kind = "int" if isinstance(value.start, int) and isinstance(value.end, int) else "float"
        spec: dict[str, Any] = {"type": kind, "low": value.start, "high": value.end}
        return {**spec, "log": True} if "log" in value.tags else spec
    raise SearchSpaceError(
        f"space.{name}: {text!r} is a sweep the optuna sweeper cannot translate either; use interval, range or choice"
    )
