"""Bring your own task: split files, text pairs, regression, and any Trainer task through data._target_."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig
from support import read_trials

from hpsearch.app import run
from hpsearch.data import read_data, tokenize_data
from hpsearch.model import char_tokenizer

CLI = Callable[..., subprocess.CompletedProcess[str]]
WORDS = ["good", "bad", "fine", "dull", "great", "awful"]


def reviews(count: int, offset: int = 0) -> list[dict]:
    return [
        {
            "review": f"review {offset + i} was {WORDS[i % 6]}",
            "other": f"reply {i} {WORDS[(i + 1) % 6]}",
            "sentiment": "pos" if i % 2 else "neg",
            "score": (i % 5) / 4,
        }
        for i in range(count)
    ]


def config(source: object, **extra: object) -> dict:
    return {
        "source": source,
        "text_column": "review",
        "label_column": "sentiment",
        "train_split": "train",
        "eval_split": None,
        "train_size": None,
        "eval_size": 10,
        "max_length": 32,
        **extra,
    }


def test_separate_train_and_validation_files_are_read_as_given(tmp_path: Path) -> None:
    pd.DataFrame(reviews(40)).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(reviews(12, offset=1000)).to_json(tmp_path / "dev.jsonl.gz", orient="records", lines=True)
    with pytest.raises(Exception, match="mix formats"):
        read_data(
            config(
                {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.jsonl.gz")},
                eval_split="validation",
            ),
            seed=0,
        )
    pd.DataFrame(reviews(12, offset=1000)).to_csv(tmp_path / "dev.csv.gz", index=False)
    data = read_data(
        config(
            {"train": str(tmp_path / "train.csv"), "validation": str(tmp_path / "dev.csv.gz")},
            eval_split="validation",
            eval_size=None,
        ),
        seed=0,
    )
    assert sorted(data.eval["review"]) == sorted(row["review"] for row in reviews(12, offset=1000))  # exactly the file
    assert len(data.train) == 40 and not set(data.train["review"]) & set(data.eval["review"])
    assert data.label_names == ["neg", "pos"]  # string labels: ids in sorted order, in both splits
    assert [data.label_names[i] for i in data.eval["sentiment"]] == [
        row["sentiment"]
        for row in sorted(reviews(12, offset=1000), key=lambda r: data.eval["review"].index(r["review"]))
    ]


def test_a_dataset_configuration_is_chosen_by_data_subset(tmp_path: Path) -> None:
    """A dataset with configurations, as on the hub (``glue`` / ``rte``): a local dataset folder whose README
    declares them, loaded through the same ``datasets.load_dataset(name, subset)`` call."""
    for name, count in (("rte", 30), ("mrpc", 20)):
        (tmp_path / "glue" / name).mkdir(parents=True)
        pd.DataFrame(reviews(count, offset=100 * count)).to_csv(tmp_path / "glue" / name / "train.csv", index=False)
    (tmp_path / "glue" / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(
            f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train.csv\n"
            for name in ("rte", "mrpc")
        )
        + "---\n"
    )
    data = read_data(config(str(tmp_path / "glue"), subset="mrpc", eval_size=5), seed=0)
    assert len(data.train) + len(data.eval) == 20 and all(text.startswith("review 20") for text in data.train["review"])
    with pytest.raises(Exception, match=r"data.source: cannot load hub dataset .* \(qnli\)"):
        read_data(config(str(tmp_path / "glue"), subset="qnli"), seed=0)


def test_size_limits_stay_stratified(tmp_path: Path) -> None:
    rows = [{"review": f"r {i}", "sentiment": "pos" if i % 4 == 0 else "neg"} for i in range(200)]  # a quarter pos
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    data = read_data(config(str(tmp_path / "train.csv"), train_size=40, eval_size=20), seed=0)
    assert data.train["sentiment"].count(data.label_names.index("pos")) == 10
    assert data.eval["sentiment"].count(data.label_names.index("pos")) == 5


def test_text_pairs_reach_the_tokenizer_as_pairs(tmp_path: Path) -> None:
    pd.DataFrame(reviews(40)).to_csv(tmp_path / "pairs.csv", index=False)
    cfg = config(str(tmp_path / "pairs.csv"), text_column=["review", "other"])
    tokenizer = char_tokenizer()
    data = tokenize_data(read_data(cfg, seed=0), cfg, tokenizer)
    row = data.train[0]
    assert set(row["token_type_ids"]) == {0, 1}  # segment 0 for the review, 1 for the reply
    first = row["token_type_ids"].index(1)

    def text(ids: list[int]) -> str:
        return "".join(
            token.removeprefix("##") for token in tokenizer.convert_ids_to_tokens(ids) if not token.startswith("[")
        )

    original = data.train.num_rows and read_data(cfg, seed=0).train[0]
    assert text(row["input_ids"][:first]) == original["review"].replace(" ", "")  # segment 0: the first text
    assert text(row["input_ids"][first:]) == original["other"].replace(" ", "")  # segment 1: the second


def test_regression_has_float_labels_one_output_and_a_spearman_objective(
    make_config: Callable[..., DictConfig], tmp_path: Path
) -> None:
    pd.DataFrame(reviews(120)).to_csv(tmp_path / "scores.csv", index=False)
    overrides = [
        "experiment=ci",
        f"data.source={tmp_path / 'scores.csv'}",
        "data.text_column=review",
        "data.label_column=score",
        "data.train_size=80",
        "data.eval_size=40",
        "objective.metrics=[spearman,pearson,mse]",
        "objective.objectives=[{metric: eval_spearman, direction: maximize}]",
        "n_trials=2",
    ]
    cfg = make_config(*overrides)
    data = read_data(cfg.data, seed=0)
    assert data.regression and data.train.features["score"].dtype == "float32"
    assert sorted(set(data.train["score"])) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert data.model_context["num_labels"] == 1 and data.model_context["problem_type"] == "regression"
    result = run(cfg)
    for trial in result.trials:
        assert trial.state == "COMPLETE" and trial.values == [trial.metrics["eval_spearman"]]
        assert {"eval_pearson", "eval_mse"} <= set(trial.metrics)
    bad = make_config(*overrides[:-3], "n_trials=1", "study_name=accuracy")  # the default accuracy on a float label
    with pytest.raises(Exception, match=r"objective\.metrics: 'accuracy' does not apply to regression"):
        run(bad)


def test_tiny_bert_with_one_label_is_a_regression_model() -> None:
    from hpsearch.model import tiny_bert

    model = tiny_bert(1, {0: "score"}, {"score": 0}, char_tokenizer())
    assert model.classifier.out_features == 1 and model.num_labels == 1


@pytest.mark.parametrize("backend", ["optuna", pytest.param("ray", marks=pytest.mark.slow)])
def test_lm_smoke_runs_through_any_backend(cli: CLI, tmp_path: Path, backend: str) -> None:
    done = cli("experiment=lm_smoke", f"backend={backend}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_trials(tmp_path / "run")
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    for row in rows:
        assert float(row["objective"]) == float(row["eval_loss"]) and float(row["eval_perplexity"]) > 1
    assert (tmp_path / "run" / "best.json").is_file() and (tmp_path / "run" / "best_hyperparameters.yaml").is_file()


def test_pairs_smoke_runs(cli: CLI, tmp_path: Path) -> None:
    done = cli("experiment=pairs_smoke", "n_trials=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [row["state"] for row in read_trials(tmp_path / "run")] == [
        "COMPLETE",
        "COMPLETE",
    ]


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    mixed = pd.DataFrame([{"review": f"r {i}", "sentiment": "pos" if i % 3 else str(i)} for i in range(30)])
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    scores = pd.DataFrame(reviews(30))
    scores.loc[7, "score"] = None
    scores.to_csv(tmp_path / "holes.csv", index=False)
    pd.DataFrame(reviews(30)).to_csv(tmp_path / "ok.csv", index=False)
    return {"mixed": tmp_path / "mixed.csv", "holes": tmp_path / "holes.csv", "ok": tmp_path / "ok.csv"}


BAD_TASKS = [
    (
        lambda f: [f"data.source={f['mixed']}", "data.text_column=review", "data.label_column=sentiment"],
        "data.label_column: column 'sentiment' mixes numbers and text",
    ),
    (
        lambda f: [f"data.source={f['ok']}", "data.text_column=[review,answer]", "data.label_column=sentiment"],
        "data.text_column: column 'answer' does not exist",
    ),
    (
        lambda f: [f"data.source={f['holes']}", "data.text_column=review", "data.label_column=score"],
        "data.label_column: row 7 of 'score' is empty or NaN; a regression target needs a number in every row",
    ),
    (
        lambda f: [
            f"+data.source={{train: {f['ok']}, validation: {f['ok']}}}",
            "data.text_column=review",
            "data.label_column=sentiment",
            "data.eval_split=test",
        ],
        "data.eval_split: split 'test' does not exist; available: ['train', 'validation']",
    ),
    (
        lambda f: ["+data._target_=helpers.not_a_task"],
        "data._target_: helpers.not_a_task returned dict, not an hpsearch.Task",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "message"), BAD_TASKS, ids=["mixed-labels", "pair-column", "nan-target", "split", "target"]
)
def test_bad_task_input_is_one_line(
    cli: CLI, tmp_path: Path, overrides: Callable[[dict], list[str]], message: str
) -> None:
    done = cli("experiment=ci", "data.train_size=null", "data.eval_size=10", *overrides(_bad_files(tmp_path)))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert lines == [lines[0]] and lines[0].startswith("hpsearch: error: ") and message in lines[0], done.stderr[-2000:]
