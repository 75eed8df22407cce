"""Where each search-space parameter goes, decided in one place.

A parameter's name picks its destination:

1. a field of the trainer's arguments class (``TrainingArguments``): set on the trial's training arguments;
2. an argument of ``model_init``: the trial's model is built with it (e.g. ``hidden_dropout_prob``);
3. with ``peft`` set, a ``LoraConfig`` field (``r``, ``lora_alpha``, ``lora_dropout``, ...) or
   ``alpha_over_r``: the trial's adapter.

A name that two destinations claim is a config error naming both, and so is one that none claims
(transformers would only warn and drop it), or an adapter field while ``peft=none``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from hpsearch.errors import ConfigError, qualified_name
from hpsearch.space import SearchSpace

if TYPE_CHECKING:
    from hpsearch.model import TrialModels

TRAINING = "a TrainingArguments field"
MODEL_INIT = "an argument of model_init"
ADAPTER = "a LoraConfig field (peft)"


def destinations(name: str, argument_fields: Collection[str], model_init: TrialModels, adapter: bool) -> list[str]:
    """Every destination that claims ``name``."""
    from hpsearch.peft import adapter_fields

    claims = [(TRAINING, argument_fields), (MODEL_INIT, model_init.consumed)]
    if adapter:
        claims.append((ADAPTER, adapter_fields()))
    return [destination for destination, names in claims if name in names]


def check_space_routing(
    space: SearchSpace, argument_fields: Collection[str], model_init: TrialModels, adapter: bool
) -> None:
    """Each parameter of the space goes to exactly one destination."""
    target = qualified_name(model_init.target)
    for name in space.names:
        claimed = destinations(name, argument_fields, model_init, adapter)
        if len(claimed) > 1:
            raise ConfigError(
                f"space.{name}: both {claimed[0]} and {claimed[1]} ({target}); rename the model_init argument "
                "or remove the parameter"
            )
        if claimed:
            continue
        if not adapter and name in _adapter_names():
            raise ConfigError(f"space.{name}: a LoRA adapter setting, but peft=none; add peft=lora or remove it")
        raise ConfigError(
            f"space.{name}: neither a TrainingArguments field nor an argument of model_init ({target})"
            + (" nor a LoraConfig field" if adapter else "")
            + "; rename it or remove it"
        )


def _adapter_names() -> frozenset[str]:
    """LoraConfig's fields where peft is installed (else nothing can be an adapter setting)."""
    from hpsearch.errors import MissingPackageError
    from hpsearch.peft import adapter_fields

    try:
        return adapter_fields()
    except MissingPackageError:
        return frozenset()
