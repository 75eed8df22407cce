"""Local dataset files through `datasets`: formats, column choice, label encoding, splits."""

from __future__ import annotations

import json
import re
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
        ({"train_size": 0}, "data.train_size: must be >= 1 (got 0); or null for every row"),
        ({"eval_split": "validation"}, "data.eval_split: split 'validation' does not exist; available: ['train']"),
        ({"label_column": "stars"}, "data.label_column: column 'stars' does not exist"),
    ],
)
def test_bad_data_settings_name_their_key(tmp_path: Path, extra: dict, message: str) -> None:
    path = tmp_path / "reviews.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False)
    with pytest.raises(DataError, match=re.escape(message)):
        read_data(_config(path, **extra), seed=0)


def test_unknown_format_is_named(tmp_path: Path) -> None:
    path = tmp_path / "reviews.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match=r"cannot tell the format of 'reviews\.xlsx'"):
        read_data(_config(path), seed=0)


def test_sizes_are_limits_and_the_log_says_when_a_split_has_fewer_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``eval_size=128`` over a 37-row validation file takes those 37, as ``max_eval_samples`` would."""
    (tmp_path / "train.csv").write_text(pd.DataFrame(ROWS).to_csv(index=False))
    (tmp_path / "validation.csv").write_text(pd.DataFrame(ROWS[:37]).to_csv(index=False))
    source = {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "validation.csv")}
    with caplog.at_level("INFO", logger="hpsearch.data"):
        config = {**_config(tmp_path, eval_split="validation", eval_size=128, train_size=500), "source": source}
        data = read_data(config, seed=0)
    assert (len(data.train), len(data.eval)) == (60, 37)
    assert [record.getMessage() for record in caplog.records] == [
        "data.train_size=500: the split has only 60 rows; using all of them",
        "data.eval_size=128: the split has only 37 rows; using all of them",
    ]


def test_a_class_with_a_single_row_still_splits(tmp_path: Path) -> None:
    rows = [*ROWS, {"review": "the only neutral one", "sentiment": 2}]
    pd.DataFrame(rows).to_csv(tmp_path / "reviews.csv", index=False)
    data = read_data(_config(tmp_path / "reviews.csv", train_size=20), seed=0)
    assert (len(data.train), len(data.eval)) == (20, 12)
    assert data.label_names == ["0", "1", "2"]
