"""LoRA adapters (``peft=lora``): each trial trains a fresh adapter on the one base model of its process.

The base model is built once per process (worker, DDP rank) and again only when a ``model_init`` parameter of
the space changes. Each trial attaches a new adapter with its own settings and removes it afterwards, so the
base weights stay exactly as loaded: peft freezes them, and the heads it trains (``modules_to_save``, such as
a classifier) are copies whose untrained originals are put back.

A trial's adapter settings are ``conf/peft/lora.yaml``'s, overridden by the space parameters named after a
``LoraConfig`` field, and by ``alpha_over_r``, the alpha/r ratio, which sets ``lora_alpha = alpha_over_r * r``.
"""

from __future__ import annotations

import dataclasses
import typing
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from hpsearch.errors import ConfigError, first_line
from hpsearch.imports import require
from hpsearch.settings import admits, type_name

if TYPE_CHECKING:
    from hpsearch.model import TrialModels
    from hpsearch.space import SearchSpace

ALPHA_OVER_R = "alpha_over_r"
_BASES: dict[str, tuple[dict[str, Any], Any]] = {}  # per process: each search's base model, and its parameters
# Named sets of target modules: peft's own "all-linear", and the attention projections LoRA's paper adapts
# (BERT's, Llama's and GPT-2's names; those the model has are taken).
TARGET_PRESETS: dict[str, tuple[str, ...]] = {
    "attention": ("query", "key", "value", "q_proj", "k_proj", "v_proj", "o_proj", "c_attn"),
    "query-value": ("query", "value", "q_proj", "v_proj"),
}
ALL_LINEAR = "all-linear"
# peft's task types for the heads hpsearch builds: a model class whose name ends so gets that type.
TASK_TYPES = {"ForSequenceClassification": "SEQ_CLS", "ForCausalLM": "CAUSAL_LM", "LMHeadModel": "CAUSAL_LM"}


def _peft() -> Any:
    return require("peft", "peft=lora", extra="peft")


@cache
def adapter_fields() -> frozenset[str]:
    """The names a space parameter may take to set a trial's adapter: ``LoraConfig``'s fields and the ratio."""
    return frozenset(item.name for item in dataclasses.fields(_peft().LoraConfig)) | {ALPHA_OVER_R}


@dataclass(frozen=True)
class AdapterSettings:
    """The ``peft`` config group: ``LoraConfig`` keys, each checked, applied to every trial's adapter."""

    settings: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AdapterSettings | None:
        """None for ``peft=none`` (an empty group); else the settings, every key a ``LoraConfig`` field."""
        settings = {key: value for key, value in config.items() if key != "_target_"}
        if not settings and "_target_" not in config:
            return None
        fields = adapter_fields() - {ALPHA_OVER_R}
        for key in settings:
            if key not in fields:
                raise ConfigError(f"peft.{key}: not a LoraConfig field; fix or remove it")
        adapter = cls(settings)
        adapter.lora_config({})  # a value LoraConfig refuses (r=0, bias=maybe) fails before anything loads
        return adapter

    def lora_config(self, params: Mapping[str, Any], task_type: str | None = None, **resolved: Any) -> Any:
        """This trial's ``LoraConfig``: the group's settings, the trial's adapter parameters over them."""
        chosen = {key: value for key, value in params.items() if key in adapter_fields()}
        options = {**self.settings, **chosen, **resolved}
        ratio = options.pop(ALPHA_OVER_R, None)
        if ratio is not None:
            options["lora_alpha"] = ratio * options.get("r", 8)
        if options.get("task_type") is None and task_type is not None:
            options["task_type"] = task_type
        try:
            return _peft().LoraConfig(**options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"peft: LoraConfig refuses these settings ({first_line(error)}); fix them") from None


def check_adapter_space(space: SearchSpace, adapter: AdapterSettings | None) -> None:
    """Every adapter value a trial can get is one peft trains with, checked before anything loads."""
    if adapter is None:
        return
    if ALPHA_OVER_R in space.names and "lora_alpha" in space.names:
        raise ConfigError("space.alpha_over_r: sets lora_alpha, which the space also searches; keep one of the two")
    for key, value in adapter.settings.items():
        _check_value(f"peft.{key}", key, value)
    for param in space:
        for value in param.extremes():
            _check_value(f"space.{param.name}", param.name, value)


# What peft refuses only once the adapter is attached to a loaded model: (the rule, whether a value keeps it).
VALUE_RULES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "r": ("an integer >= 1", lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 1),
    "lora_alpha": ("a number > 0", lambda value: isinstance(value, (int, float)) and value > 0),
    ALPHA_OVER_R: ("a number > 0", lambda value: isinstance(value, (int, float)) and value > 0),
    "lora_dropout": ("a number in [0, 1)", lambda value: isinstance(value, (int, float)) and 0 <= value < 1),
    "bias": ("one of none, all, lora_only", lambda value: value in ("none", "all", "lora_only")),
}


def _check_value(key: str, name: str, value: Any) -> None:
    if name in VALUE_RULES and not VALUE_RULES[name][1](value):
        raise ConfigError(f"{key}: must be {VALUE_RULES[name][0]} (got {value!r}); fix the value")
    annotation = _field_types().get(name)
    if annotation is not None and not admits(annotation, value):
        raise ConfigError(f"{key}: {value!r} is not a valid {type_name(annotation)}; fix the value")


@cache
def _field_types() -> dict[str, Any]:
    try:
        return typing.get_type_hints(_peft().LoraConfig)
    except (NameError, TypeError):  # an annotation this Python cannot evaluate: LoraConfig itself still checks
        return {}


class AdaptedModelInit:
    """``model_init`` for a LoRA search: the process's base model with this trial's fresh adapter.

    Picklable without its models (Ray ships it to its workers): each process builds its own base, once, kept
    in ``_BASES`` under this object's key, so the trainers a Ray worker makes trial after trial share it."""

    def __init__(self, base_init: TrialModels, adapter: AdapterSettings) -> None:
        self.base_init = base_init
        self.adapter = adapter
        self.consumed = base_init.consumed
        self.target = base_init.target
        self._key = uuid.uuid4().hex
        self._attached: Any = None  # the running trial's PeftModel
        self._originals: dict[str, Any] = {}  # the untrained heads peft trains copies of
        self._requires_grad: dict[str, bool] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_attached": None, "_originals": {}, "_requires_grad": {}}

    def __call__(self, params: Mapping[str, Any]) -> Any:
        self.release()
        base = self._base_for(params)
        config = self.adapter.lora_config(params, _task_type(base), target_modules=self._target_modules(base, params))
        self._requires_grad = {name: p.requires_grad for name, p in base.named_parameters()}
        try:
            model = _peft().get_peft_model(base, config)
        except (ValueError, TypeError, NotImplementedError) as error:  # settings only peft's layers check
            raise ConfigError(
                f"peft: attaching the adapter failed ({type(error).__name__}: {first_line(error)}); fix the peft keys"
            ) from None
        wrapper = _peft().utils.ModulesToSaveWrapper
        self._originals = {
            name: module.original_module for name, module in base.named_modules() if isinstance(module, wrapper)
        }
        self._attached = model
        return model

    def release(self) -> None:
        """Remove the trial's adapter: the base model as it was loaded, bit for bit."""
        if self._attached is None:
            return
        base = self._attached.unload()
        for name, module in self._originals.items():
            base.set_submodule(name, module)
        for name, parameter in base.named_parameters():
            parameter.requires_grad_(self._requires_grad.get(name, True))
        self._attached, self._originals = None, {}

    def describe(self, model: Any) -> dict[str, float]:
        """The trainable and total parameters of a trial's adapted model, for trials.csv: the adapter changed."""
        from hpsearch.model_metrics import num_parameters, trainable_parameters

        return {
            "model_trainable_parameters": trainable_parameters(model, {}),
            "model_num_parameters": num_parameters(model, {}),
        }

    def _base_for(self, params: Mapping[str, Any]) -> Any:
        chosen = {key: value for key, value in params.items() if key in self.consumed}
        built = _BASES.get(self._key)
        if built is None or built[0] != chosen:
            _BASES.pop(self._key, None)  # the old base goes before the new one loads: one in memory at a time
            built = _BASES[self._key] = (chosen, self.base_init(params))
        return built[1]

    def _target_modules(self, base: Any, params: Mapping[str, Any]) -> Any:
        """``target_modules`` with a preset expanded to the model's own names; each name must be the model's."""
        wanted = params.get("target_modules", self.adapter.settings.get("target_modules"))
        if wanted is None or wanted == ALL_LINEAR:
            return wanted
        leaf_names = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules() if name}
        if isinstance(wanted, str) and wanted in TARGET_PRESETS:
            present = [name for name in TARGET_PRESETS[wanted] if name in leaf_names]
            if not present:
                raise ConfigError(
                    f"peft.target_modules: the model has none of preset {wanted!r}'s modules "
                    f"({', '.join(TARGET_PRESETS[wanted])}); name its modules or use {ALL_LINEAR}"
                )
            return present
        names = [wanted] if isinstance(wanted, str) else list(wanted)
        missing = [name for name in names if name not in leaf_names]
        if missing:
            linear = sorted({name.rsplit(".", 1)[-1] for name, module in base.named_modules() if _is_linear(module)})
            raise ConfigError(
                f"peft.target_modules: {', '.join(map(repr, missing))} is not a module of the model; its linear "
                f"modules are {', '.join(linear)} (or use {ALL_LINEAR}, or a preset: {', '.join(TARGET_PRESETS)})"
            )
        return names


def _task_type(model: Any) -> str | None:
    name = type(model).__name__
    return next((task for ending, task in TASK_TYPES.items() if name.endswith(ending)), None)


def _is_linear(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear)
