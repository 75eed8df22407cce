"""Local dataset files through `datasets`: formats, column choice, label encoding, splits."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hpsearch.data import read_data
from hpsearch.errors import DataError

ROWS = [{"review": f"review number {i} {'good' if i % 3 else 'bad'}", "sentiment": int(i % 3 == 0)} for i in range(60)]


def _config(source: Path, **extra: object) -> dict:
    return {
        "source": str(source),
        "text_column": "review",
        "label_column": "sentiment",
        "train_split": "train",
        "eval_split": None,
        "train_size": None,
        "eval_size": 12,
        "max_length": 16,
        **extra,
    }


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv", ".tsv"])
def test_local_files_of_every_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"reviews{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    data = read_data(_config(path, train_size=40), seed=0)
    assert (len(data.train), len(data.eval)) == (40, 12)
    assert data.label_names == ["0", "1"]  # integer labels keep their ids
    assert set(data.train.column_names) == {"review", "sentiment"}
    assert 3 <= sum(data.eval["sentiment"]) <= 5  # stratified: a third of 12


def test_string_labels_are_encoded_in_sorted_order(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    pd.DataFrame([{"review": r["review"], "sentiment": "pos" if r["sentiment"] else "neg"} for r in ROWS]).to_csv(
        path, index=False
    )
    assert read_data(_config(path), seed=0).label_names == ["neg", "pos"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"eval_size": 60}, "data.eval_size: must be smaller than the 60 available rows"),
        ({"train_size": 500}, "data.train_size: must be between 1 and 48"),
        ({"eval_split": "validation"}, "data.eval_split: split 'validation' does not exist; available: ['train']"),
        ({"label_column": "stars"}, "data.label_column: column 'stars' does not exist"),
    ],
)
def test_bad_data_settings_name_their_key(tmp_path: Path, extra: dict, message: str) -> None:
    path = tmp_path / "reviews.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        read_data(_config(path, **extra), seed=0)


def test_unknown_format_is_named(tmp_path: Path) -> None:
    path = tmp_path / "reviews.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"cannot tell the format of 'reviews\.xlsx'"):
        read_data(_config(path), seed=0)
