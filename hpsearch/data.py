"""The built-in text tasks, from ``conf/data/*.yaml``: classification and regression of single texts or text
pairs, read and tokenised once.

``data.source`` is a ``pkg:`` location, a local csv/tsv/json/jsonl/parquet file (compressed or not), a mapping of
split names to such files (``{train: train.csv, validation: dev.csv}``), or a hub dataset name (or a dataset
folder laid out like one) with an optional configuration (``data.subset=rte``). ``data.text_column`` names one column, or two for text pairs. The label
column decides the task: strings or integers 0..N-1 are classes (strings numbered in sorted order), floats are
a regression target (one model output, transformers' regression problem type). Any other task comes from
``data._target_`` (``hpsearch.task``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Value, load_dataset
from transformers import PreTrainedTokenizerBase

from hpsearch.errors import DataError, first_line
from hpsearch.locate import resolve_location
from hpsearch.task import Task

log = logging.getLogger(__name__)

_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_COMPRESSIONS = {".gz", ".bz2", ".xz", ".zst"}


@dataclass(frozen=True)
class PreparedData:
    train: Dataset
    eval: Dataset
    label_names: list[str]  # class names in id order; for regression, the label column's name
    regression: bool = False

    @property
    def model_context(self) -> dict[str, Any]:
        """The arguments every ``model_init`` may ask for by name."""
        return {
            "num_labels": len(self.label_names),
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: index for index, name in enumerate(self.label_names)},
            "problem_type": "regression" if self.regression else "single_label_classification",
        }


def _file_builder(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in _COMPRESSIONS]
    return _FILE_BUILDERS.get(suffixes[-1]) if suffixes else None


def load_source(source: Any, subset: str | None = None) -> DatasetDict:
    """``data.source`` read: a hub dataset or folder, a local file, or a mapping of split names to files."""
    if isinstance(source, Mapping):
        return _load_files(
            {str(split): _data_file(str(path), f"data.source.{split}") for split, path in source.items()}
        )
    location = resolve_location(str(source), "data.source")
    path = Path(location).expanduser()
    if path.is_dir() or (_file_builder(path) is None and not path.exists()):  # a hub dataset or a dataset folder
        try:
            return load_dataset(location, subset)
        except Exception as error:  # noqa: BLE001 - any hub failure becomes one line
            raise DataError(
                f"data.source: cannot load hub dataset {location!r}{f' ({subset})' if subset else ''} "
                f"({type(error).__name__}: {first_line(error)}); check the name, data.subset and the network, "
                "or point it at a local file"
            ) from None
    return _load_files({"train": _data_file(location, "data.source")})


def _data_file(location: str, key: str) -> Path:
    path = Path(resolve_location(location, key)).expanduser()
    if not path.is_file():
        raise DataError(f"{key}: no such file {str(path)!r}; fix the path")
    if _file_builder(path) is None:
        raise DataError(f"{key}: cannot tell the format of {path.name!r}; use .csv, .tsv, .json, .jsonl or .parquet")
    return path


def _load_files(files: Mapping[str, Path]) -> DatasetDict:
    """Local files by split name; every file of one format."""
    builders = {_file_builder(path) for path in files.values()}
    if len(builders) > 1:
        raise DataError(
            f"data.source: the split files mix formats ({sorted(map(str, builders))}); give every split the same format"
        )
    builder = builders.pop()
    options = {"delimiter": "\t"} if any(".tsv" in path.suffixes for path in files.values()) else {}
    try:
        return load_dataset(builder, data_files={split: str(path) for split, path in files.items()}, **options)
    except Exception as error:  # noqa: BLE001
        names = ", ".join(repr(str(path)) for path in files.values())
        raise DataError(
            f"data.source: cannot read {names} as {builder} ({type(error).__name__}: {first_line(error)})"
        ) from None


def _pick_split(raw: DatasetDict, name: str, key: str) -> Dataset:
    if name not in raw:
        raise DataError(f"data.{key}: split {name!r} does not exist; available: {sorted(raw)}")
    return raw[name]


def text_columns(config: Mapping[str, Any]) -> list[str]:
    """``data.text_column``: one column, or two for text pairs."""
    columns = config["text_column"]
    columns = [columns] if isinstance(columns, str) else [str(column) for column in columns]
    if not 1 <= len(columns) <= 2:
        raise DataError(f"data.text_column: name one column, or two for text pairs (got {columns})")
    return columns


def _check_columns(dataset: Dataset, config: Mapping[str, Any]) -> None:
    for key, column in [
        *(("text_column", column) for column in text_columns(config)),
        ("label_column", config["label_column"]),
    ]:
        if column not in dataset.column_names:
            raise DataError(f"data.{key}: column {column!r} does not exist; available: {dataset.column_names}")


def _encode_labels(dataset: Dataset, column: str) -> tuple[Dataset, list[str], bool]:
    """Class ids and names (strings in sorted order), or float targets for regression; and whether it is one."""
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return dataset, list(feature.names), False
    dtype = getattr(feature, "dtype", None)
    if dtype in ("string", "large_string"):
        values = set(dataset[column])
        if None in values or "" in values:
            raise DataError(f"data.label_column: column {column!r} has rows without a label; fill or drop them")
        numeric = {value for value in values if _is_number(value)}
        if numeric and numeric != values:
            raise DataError(
                f"data.label_column: column {column!r} mixes numbers and text (e.g. {min(numeric)!r} and "
                f"{min(values - numeric)!r}); use one type of label"
            )
        dataset = dataset.class_encode_column(column)
        return dataset, list(dataset.features[column].names), False
    if dtype in ("float16", "float32", "float64"):
        for row, value in enumerate(dataset[column]):
            if value is None or math.isnan(value):
                raise DataError(
                    f"data.label_column: row {row} of {column!r} is empty or NaN; a regression target needs a number in every row"
                )
        return dataset.cast_column(column, Value("float32")), [column], True
    if dtype is None or not dtype.startswith(("int", "uint")):
        raise DataError(
            f"data.label_column: column {column!r} holds {feature}; labels must be strings, integers 0..N-1 or floats"
        )
    numbers: list[int] = sorted(set(dataset[column]))
    if numbers != list(range(len(numbers))):
        raise DataError(f"data.label_column: labels must be strings or 0..N-1 integers, got {numbers[:10]}")
    return dataset.cast_column(column, ClassLabel(names=[str(v) for v in numbers])), [str(v) for v in numbers], False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _take(dataset: Dataset, size: int | None, key: str, stratify: str | None, seed: int) -> Dataset:
    """At most ``size`` rows of a shuffled split (a limit, as ``max_eval_samples`` in transformers' examples),
    stratified by class where the labels allow it."""
    if size is None:
        return dataset
    if size < 1:
        raise DataError(f"data.{key}: must be >= 1 (got {size}); or null for every row")
    if size >= len(dataset):
        if size > len(dataset):
            log.info("data.%s=%d: the split has only %d rows; using all of them", key, size, len(dataset))
        return dataset
    return _split(dataset, len(dataset) - size, stratify, seed)[0]


def _split(dataset: Dataset, test_size: int, stratify: str | None, seed: int) -> tuple[Dataset, Dataset]:
    """(rest, ``test_size`` rows) of a shuffled split, stratified by class unless a class is too rare for it."""
    if stratify is not None:
        try:
            split = dataset.train_test_split(test_size=test_size, seed=seed, stratify_by_column=stratify)
            return split["train"], split["test"]
        except ValueError:  # a class with a single row cannot be stratified: a plain shuffle instead
            pass
    split = dataset.train_test_split(test_size=test_size, seed=seed)
    return split["train"], split["test"]


def read_data(config: Mapping[str, Any], seed: int) -> PreparedData:
    """Load, check, split and subsample the labelled texts (before any tokenizer exists)."""
    raw = load_source(config["source"], config.get("subset"))
    train = _pick_split(raw, config.get("train_split") or "train", "train_split")
    _check_columns(train, config)
    label_column = config["label_column"]
    train, label_names, regression = _encode_labels(train, label_column)
    stratify = None if regression else label_column
    if config.get("eval_split"):
        evaluation = _pick_split(raw, config["eval_split"], "eval_split")
        _check_columns(evaluation, config)
        if regression:
            evaluation, _, _ = _encode_labels(evaluation, label_column)
        else:
            evaluation = _same_classes(evaluation, label_column, label_names)
        train = train.shuffle(seed=seed)
    else:
        eval_size = config.get("eval_size") or max(1, len(train) // 5)
        if eval_size >= len(train):
            raise DataError(f"data.eval_size: must be smaller than the {len(train)} available rows (got {eval_size})")
        train, evaluation = _split(train, eval_size, stratify, seed)
    train = _take(train, config.get("train_size"), "train_size", stratify, seed)
    evaluation = _take(evaluation, config.get("eval_size"), "eval_size", stratify, seed)
    return PreparedData(train, evaluation, label_names, regression)


def _same_classes(evaluation: Dataset, column: str, label_names: list[str]) -> Dataset:
    """The eval split's labels numbered as the train split's; a class train never saw is an error."""
    feature = evaluation.features[column]
    names = feature.names if isinstance(feature, ClassLabel) else None
    values = {names[v] if names else str(v) for v in evaluation[column]}
    unseen = sorted(values - set(label_names))
    if unseen:
        raise DataError(f"data.eval_split: labels {unseen[:5]} do not occur in the train split {label_names}")
    index = {name: position for position, name in enumerate(label_names)}
    ids = [index[names[v] if names else str(v)] for v in evaluation[column]]
    return evaluation.remove_columns(column).add_column(column, ids).cast_column(column, ClassLabel(names=label_names))


def tokenize_data(data: PreparedData, config: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase) -> PreparedData:
    """Tokenise once; every trial reuses the result (padding happens per batch). Text pairs go to the
    tokenizer as pairs, so it adds its own separator and segment ids."""
    columns, label_column, max_length = text_columns(config), config["label_column"], int(config["max_length"])

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = [[str(text) for text in batch[column]] for column in columns]
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        encoded["labels"] = batch[label_column]
        return dict(encoded)

    def prepare(dataset: Dataset) -> Dataset:
        return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, keep_in_memory=True)

    return PreparedData(prepare(data.train), prepare(data.eval), data.label_names, data.regression)


def text_task(
    data: PreparedData,
    config: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    compute_metrics: Any,
    metric_names: Sequence[str],
) -> Task:
    """The built-in task: tokenised splits, padding per batch, the objective's metrics."""
    from transformers import DataCollatorWithPadding

    tokenized = tokenize_data(data, config, tokenizer)
    return Task(
        tokenized.train,
        tokenized.eval,
        DataCollatorWithPadding(tokenizer),
        compute_metrics,
        tuple(metric_names),
        data.model_context,
    )
