"""What one process builds once and every trial reuses: the task's data, the tokenizer and the trainer."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hpsearch.config import plain
from hpsearch.distributed import Coordinator
from hpsearch.errors import ConfigError, HPSearchError, first_line
from hpsearch.objective import Objectives
from hpsearch.space import SearchSpace
from hpsearch.task import Task

if TYPE_CHECKING:
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
    from transformers import PrinterCallback

    from hpsearch.best_model import BestModelKeeper
    from hpsearch.model import ModelInit, TrialModels
    from hpsearch.routing import check_space_routing
    from hpsearch.trainer import search_trainer_class, trainer_class
    from hpsearch.training import argument_fields, arguments_class, training_arguments

    base_class = trainer_class(trainer_target(cfg))
    args = training_arguments(training, run_dir, seed, arguments_class(base_class))
    target = instantiate_key(cfg.model.model_init, "model.model_init", _partial_=True)
    probe = ModelInit.build(target, {"num_labels": 2, "id2label": {}, "label2id": {}, "tokenizer": None})
    # before loading anything: a misrouted parameter is a config error
    check_space_routing(space, argument_fields(type(args)), probe, adapter is not None)
    task, tokenizer = build_task(cfg, objectives, seed)
    base_init = ModelInit.build(target, {**task.model_context, "tokenizer": tokenizer})
    models: TrialModels = base_init
    notes: dict[str, Any] = {}
    if adapter is not None:
        from hpsearch.peft import AdaptedModelInit

        models = AdaptedModelInit(base_init, adapter)
        notes = {"base_model": plain(cfg.model.model_init)}  # the saved adapter belongs to this model
    keeper = BestModelKeeper(run_dir / "best_model", objectives, notes) if cfg.get("save_best_model") else None
    trainer = search_trainer_class(base_class)(
        hpsearch_model_init=models,
        space=space,
        objectives=objectives,
        coordinator=coordinator,
        best_model=keeper,
        args=args,
        train_dataset=task.train,
        eval_dataset=task.eval,
        data_collator=task.data_collator,
        compute_metrics=task.compute_metrics,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)  # per-step log lines; the search shows its own progress
    return trainer
