"""Dataset loading and one-time tokenisation, from ``conf/data/*.yaml``.

``data.source`` is a ``pkg:`` location, a local csv/json/jsonl/parquet file, or a hub dataset name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from transformers import PreTrainedTokenizerBase

from hpsearch.errors import first_line, DataError
from hpsearch.locate import resolve_location

_FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_COMPRESSIONS = {".gz", ".bz2", ".xz", ".zst"}


@dataclass(frozen=True)
class PreparedData:
    train: Dataset
    eval: Dataset
    label_names: list[str]

    @property
    def model_context(self) -> dict[str, Any]:
        """The arguments every ``model_init`` may ask for by name."""
        return {
            "num_labels": len(self.label_names),
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: index for index, name in enumerate(self.label_names)},
        }


def _file_builder(path: Path) -> str | None:
    suffixes = [s for s in path.suffixes if s not in _COMPRESSIONS]
    return _FILE_BUILDERS.get(suffixes[-1]) if suffixes else None


def _load_raw(source: str) -> DatasetDict:
    location = resolve_location(source, "data.source")
    path = Path(location).expanduser()
    builder = _file_builder(path)
    if builder is None and not path.exists():
        try:
            return load_dataset(location)
        except Exception as error:  # noqa: BLE001 - any hub failure becomes one line
            raise DataError(
                f"data.source: cannot load hub dataset {location!r} ({type(error).__name__}: "
                f"{first_line(error)}); check the name and network, or point it at a local file"
            ) from None
    if not path.is_file():
        raise DataError(f"data.source: no such file {str(path)!r}; fix the path")
    if builder is None:
        raise DataError(f"data.source: cannot tell the format of {path.name!r}; use .csv, .tsv, .json, .jsonl or .parquet")
    options = {"delimiter": "\t"} if ".tsv" in path.suffixes else {}
    try:
        return load_dataset(builder, data_files={"train": str(path)}, **options)
    except Exception as error:  # noqa: BLE001
        raise DataError(
            f"data.source: cannot read {str(path)!r} as {builder} ({type(error).__name__}: {first_line(error)})"
        ) from None


def _pick_split(raw: DatasetDict, name: str, key: str) -> Dataset:
    if name not in raw:
        raise DataError(f"data.{key}: split {name!r} does not exist; available: {sorted(raw)}")
    return raw[name]


def _check_columns(dataset: Dataset, config: Mapping[str, Any]) -> None:
    for key in ("text_column", "label_column"):
        if config[key] not in dataset.column_names:
            raise DataError(
                f"data.{key}: column {config[key]!r} does not exist; available: {dataset.column_names}"
            )


def _encode_labels(dataset: Dataset, column: str) -> tuple[Dataset, list[str]]:
    feature = dataset.features[column]
    if isinstance(feature, ClassLabel):
        return dataset, list(feature.names)
    if feature.dtype in ("string", "large_string"):
        dataset = dataset.class_encode_column(column)
        return dataset, list(dataset.features[column].names)
    values = sorted(set(dataset[column]))
    if values != list(range(len(values))):
        raise DataError(f"data.label_column: labels must be strings or 0..N-1 integers, got {values[:10]}")
    return dataset.cast_column(column, ClassLabel(names=[str(v) for v in values])), [str(v) for v in values]


def _take(dataset: Dataset, size: int | None, key: str) -> Dataset:
    if size is None:
        return dataset
    if size < 1 or size > len(dataset):
        raise DataError(f"data.{key}: must be between 1 and {len(dataset)} (got {size})")
    return dataset.select(range(size))


def read_data(config: Mapping[str, Any], seed: int) -> PreparedData:
    """Load, check, split and subsample the labelled texts (before any tokenizer exists)."""
    raw = _load_raw(str(config["source"]))
    train = _pick_split(raw, config.get("train_split") or "train", "train_split")
    _check_columns(train, config)
    label_column = config["label_column"]
    train, label_names = _encode_labels(train, label_column)
    if config.get("eval_split"):
        evaluation = _pick_split(raw, config["eval_split"], "eval_split")
        _check_columns(evaluation, config)
        evaluation = evaluation.cast_column(label_column, train.features[label_column])
        train = train.shuffle(seed=seed)
        evaluation = evaluation.shuffle(seed=seed)
    else:
        eval_size = config.get("eval_size") or max(1, len(train) // 5)
        if eval_size >= len(train):
            raise DataError(f"data.eval_size: must be smaller than the {len(train)} available rows (got {eval_size})")
        split = train.train_test_split(test_size=eval_size, seed=seed, stratify_by_column=label_column)
        train, evaluation = split["train"], split["test"]
    train = _take(train, config.get("train_size"), "train_size")
    evaluation = _take(evaluation, config.get("eval_size"), "eval_size")
    return PreparedData(train, evaluation, label_names)


def tokenize_data(data: PreparedData, config: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase) -> PreparedData:
    """Tokenise once; every trial reuses the result (padding happens per batch)."""
    text_column, label_column, max_length = config["text_column"], config["label_column"], int(config["max_length"])

    def tokenize(batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = tokenizer([str(text) for text in batch[text_column]], truncation=True, max_length=max_length)
        encoded["labels"] = batch[label_column]
        return encoded

    def prepare(dataset: Dataset) -> Dataset:
        return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, keep_in_memory=True)

    return PreparedData(prepare(data.train), prepare(data.eval), data.label_names)


def load_data(config: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int) -> PreparedData:
    return tokenize_data(read_data(config, seed), config, tokenizer)
