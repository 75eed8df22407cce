"""What one process builds once and every trial reuses: the task's data, the tokenizer and the trainer."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hpsearch.config import plain
from hpsearch.distributed import Coordinator
from hpsearch.errors import ConfigError, HPSearchError, first_line, qualified_name
from hpsearch.objective import Objectives
from hpsearch.space import SearchSpace
from hpsearch.task import Task

if TYPE_CHECKING:
    from hpsearch.best_model import BestModelKeeper
    from hpsearch.model import TrialModels
    from hpsearch.peft import AdapterSettings


def quiet_libraries() -> None:
    """Progress bars and warnings of the libraries: the search shows its own progress and reports errors."""
    import datasets
    import huggingface_hub
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # read errors are reported as DataError
    huggingface_hub.utils.logging.set_verbosity_error()  # its retry warnings, likewise
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true but no accelerator.*")
    # peft asks transformers 5 for a renamed property on every adapter it attaches
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)


def instantiate_key(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with its errors as one config error naming ``key``."""
    try:
        return instantiate(node, **kwargs)
    except Exception as error:  # noqa: BLE001 - Hydra wraps import and call errors alike
        cause = error.__cause__ if isinstance(error.__cause__, HPSearchError) else None
        if cause is not None:
            raise cause from None
        reason = error.__cause__ or error  # Hydra's own message ends in a colon: the cause is on the next line
        raise ConfigError(
            f"{key}: cannot instantiate {node.get('_target_')!r} ({type(reason).__name__}: {first_line(reason)})"
        ) from None


def build_task(cfg: DictConfig, objectives: Objectives, seed: int) -> tuple[Task, Any]:
    """The task and the tokenizer: from ``data._target_``, or the built-in text classification/regression."""
    from hpsearch.data import read_data, text_task
    from hpsearch.task import task_from_target

    if "_target_" in cfg.data:
        tokenizer = instantiate_key(cfg.model.tokenizer, "model.tokenizer")
        task = task_from_target(instantiate_key(cfg.data, "data._target_", _partial_=True), tokenizer, seed)
        objectives.check_reachable(task.metric_names)
        return task, tokenizer
    texts = read_data(cfg.data, seed)  # data errors first: a tokenizer may be trained on the same file
    compute_metrics = objectives.metric_function(texts.regression)
    tokenizer = instantiate_key(cfg.model.tokenizer, "model.tokenizer")
    return text_task(texts, cfg.data, tokenizer, compute_metrics, objectives.metrics), tokenizer


def trainer_target(cfg: DictConfig) -> str:
    """``trainer._target_``, the Trainer class of every trial (``transformers.Trainer`` by default)."""
    return str(OmegaConf.select(cfg, "trainer._target_", default="transformers.Trainer"))


@dataclass(frozen=True)
class TrainerParts:
    """What ``hpsearch.search`` takes from a Trainer its user built: everything but each trial's model, which
    comes from the trainer's ``model_init`` or, without one, from its model's weights as given."""

    trainer_class: type
    args: Any
    train_dataset: Any
    eval_dataset: Any
    data_collator: Any
    compute_metrics: Any
    processing_class: Any
    model: Any
    model_init: Callable[..., Any] | None

    @classmethod
    def of(cls, trainer: Any) -> TrainerParts:
        from transformers import Trainer

        from hpsearch.trainer import SearchTrainer

        if not isinstance(trainer, Trainer):
            raise ConfigError(
                f"hpsearch.search: trainer: a transformers.Trainer or subclass instance (got {type(trainer).__name__})"
            )
        if trainer.eval_dataset is None:
            raise ConfigError("hpsearch.search: trainer: has no eval_dataset; every trial is scored on it, so pass one")
        return cls(
            trainer_class=trainer.hpsearch_base if isinstance(trainer, SearchTrainer) else type(trainer),
            args=trainer.args,
            train_dataset=trainer.train_dataset,
            eval_dataset=trainer.eval_dataset,
            data_collator=trainer.data_collator,
            compute_metrics=trainer.compute_metrics,
            processing_class=trainer.processing_class,
            model=trainer.model if trainer.model_init is None else None,  # with model_init, each trial builds its own
            model_init=trainer.model_init,
        )

    def model_text(self) -> str:
        """Where each trial's model comes from, stable across processes and reruns (part of the study's
        definition, and the note beside a saved adapter)."""
        if self.model_init is not None:
            return f"model_init {qualified_name(self.model_init)}"
        return f"{type(self.model).__name__} {getattr(self.model, 'name_or_path', '') or ''}".strip()

    def check_sendable(self, key: str) -> None:
        """Each part must reach a fresh worker process (pickled, as ``multiprocessing`` sends it)."""
        import pickle

        for part in dataclasses.fields(self):
            try:
                pickle.dumps(getattr(self, part.name))
            except Exception as error:  # noqa: BLE001 - pickle raises many kinds, each one line here
                raise ConfigError(
                    f"{key}: the trainer's {part.name} cannot be sent to a worker process ({type(error).__name__}: "
                    f"{first_line(error)}); {SENDABLE_HINTS.get(part.name, SENDABLE_HINT)}, or use workers=1"
                ) from None


# What makes each part of a Trainer picklable, for hpsearch.search(workers=N).
SENDABLE_HINT = "define it at module level in an importable module"
SENDABLE_HINTS = {
    "model_init": "make model_init a module-level function of an importable module (functools.partial of one works)",
    "model": "give the trainer a model_init, or save the model and load it in a module-level model_init",
    "train_dataset": "build the datasets from files, or save them (Dataset.save_to_disk) and load them",
    "eval_dataset": "build the datasets from files, or save them (Dataset.save_to_disk) and load them",
}


def build_trainer(
    cfg: DictConfig,
    training: dict[str, Any],
    space: SearchSpace,
    objectives: Objectives,
    run_dir: Path,
    seed: int,
    coordinator: Coordinator | None,
    adapter: AdapterSettings | None = None,
) -> Any:
    """Tokenizer, the task's data (tokenised once) and the trainer every trial reuses."""
    quiet_libraries()
    from hpsearch.model import ModelInit
    from hpsearch.routing import check_space_routing
    from hpsearch.trainer import trainer_class
    from hpsearch.training import argument_fields, arguments_class, training_arguments

    base_class = trainer_class(trainer_target(cfg))
    args = training_arguments(training, run_dir, seed, arguments_class(base_class))
    target = instantiate_key(cfg.model.model_init, "model.model_init", _partial_=True)
    probe = ModelInit.build(target, {"num_labels": 2, "id2label": {}, "label2id": {}, "tokenizer": None})
    # before loading anything: a misrouted parameter is a config error
    check_space_routing(space, argument_fields(type(args)), probe, adapter is not None)
    task, tokenizer = build_task(cfg, objectives, seed)
    parts = TrainerParts(
        base_class, args, task.train, task.eval, task.data_collator, task.compute_metrics, tokenizer, None, None
    )
    models = ModelInit.build(target, {**task.model_context, "tokenizer": tokenizer})
    keeper = _keeper(cfg.get("save_best_model"), run_dir, objectives, adapter, plain(cfg.model.model_init))
    return assemble_trainer(parts, models, space, objectives, coordinator, adapter, keeper)


def build_trainer_from(
    parts: TrainerParts,
    space: SearchSpace,
    objectives: Objectives,
    run_dir: Path,
    seed: int,
    coordinator: Coordinator | None,
    adapter: AdapterSettings | None,
    save_best_model: bool,
) -> Any:
    """The trainer of ``hpsearch.search``: the user's trainer's parts, with its arguments' output in the run
    directory and the search's seed."""
    quiet_libraries()
    from hpsearch.model import GivenModelInit, StartingWeights
    from hpsearch.routing import check_space_routing
    from hpsearch.training import argument_fields

    args = dataclasses.replace(parts.args, output_dir=str(run_dir / "trials"), seed=seed)
    fields = argument_fields(type(args))
    models: TrialModels
    if parts.model_init is not None:
        models = GivenModelInit(parts.model_init, frozenset(space.names) - fields - _adapter_claims(adapter))
    else:
        models = StartingWeights(parts.model, keep=adapter is None)  # an adapter leaves the base as it was
    check_space_routing(space, fields, models, adapter is not None)
    keeper = _keeper(save_best_model, run_dir, objectives, adapter, {"given": parts.model_text()})
    return assemble_trainer(
        dataclasses.replace(parts, args=args), models, space, objectives, coordinator, adapter, keeper
    )


def assemble_trainer(
    parts: TrainerParts,
    models: TrialModels,
    space: SearchSpace,
    objectives: Objectives,
    coordinator: Coordinator | None,
    adapter: AdapterSettings | None,
    best_model: BestModelKeeper | None,
) -> Any:
    """The search's trainer: hpsearch's hooks on the configured Trainer class, building each trial's model with
    ``models`` (under a fresh LoRA adapter for ``peft=lora``)."""
    from transformers import PrinterCallback

    from hpsearch.trainer import search_trainer_class

    if adapter is not None:
        from hpsearch.peft import AdaptedModelInit

        models = AdaptedModelInit(models, adapter)
    trainer = search_trainer_class(parts.trainer_class)(
        hpsearch_model_init=models,
        space=space,
        objectives=objectives,
        coordinator=coordinator,
        best_model=best_model,
        args=parts.args,
        train_dataset=parts.train_dataset,
        eval_dataset=parts.eval_dataset,
        data_collator=parts.data_collator,
        compute_metrics=parts.compute_metrics,
        processing_class=parts.processing_class,
    )
    trainer.remove_callback(PrinterCallback)  # per-step log lines; the search shows its own progress
    return trainer


def _keeper(
    save: Any, run_dir: Path, objectives: Objectives, adapter: AdapterSettings | None, base_model: Any
) -> BestModelKeeper | None:
    """``save_best_model=true``: the keeper of the best trial's model (for a LoRA search, its adapter and a
    note of the base model it belongs to)."""
    from hpsearch.best_model import BestModelKeeper

    if not save:
        return None
    return BestModelKeeper(run_dir / "best_model", objectives, {"base_model": base_model} if adapter else {})


def _adapter_claims(adapter: AdapterSettings | None) -> frozenset[str]:
    if adapter is None:
        return frozenset()
    from hpsearch.peft import adapter_fields

    return adapter_fields()
