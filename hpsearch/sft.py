"""Supervised fine-tuning data for TRL's ``SFTTrainer`` (``trainer._target_=trl.SFTTrainer``), as a ``Task``.

``SFTTrainer`` tokenises its datasets itself, so the task hands it rows of one of the three forms TRL reads:

- plain text: a ``text`` column;
- prompt/completion pairs: ``prompt`` and ``completion`` columns (the loss on the completion only);
- chat: a ``messages`` column of ``{role, content}`` lists, rendered by the tokenizer's chat template.

``sft_task`` reads any such file (csv, json, jsonl, parquet: ``data._target_=hpsearch.sft.sft_task``), and
``review_chats`` turns the embedded review text into chats for the LoRA smoke search. The objective is
``eval_loss``; ``SFTTrainer`` also reports ``eval_mean_token_accuracy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hpsearch.errors import ConfigError
from hpsearch.task import Task

FORMATS = {"messages": ("messages",), "prompt_completion": ("prompt", "completion"), "text": ("text",)}
SFT_METRICS = ("mean_token_accuracy",)


def sft_task(tokenizer: Any, seed: int, source: Any, train_size: int, eval_size: int) -> Task:
    """SFT rows from ``data.source`` (a local file or a hub dataset, as for every task), their form told by
    their columns (module docstring); its train split shuffled, then split."""
    from hpsearch.data import load_source

    return split_task(load_source(source)["train"], tokenizer, seed, train_size, eval_size)


def split_task(rows: Any, tokenizer: Any, seed: int, train_size: int, eval_size: int) -> Task:
    """SFT rows as the search's train and eval splits, checked to be a form SFTTrainer reads."""
    form = detect_format(rows.column_names)
    if form == "messages" and not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            "model.tokenizer: chat data (a messages column) needs a tokenizer with a chat template; use one that "
            "has one (hpsearch.model.chat_tokenizer builds one locally) or give prompt/completion columns"
        )
    if train_size + eval_size > len(rows):
        raise ConfigError(
            f"data.train_size: {train_size} + data.eval_size {eval_size} rows exceed the {len(rows)} there are"
        )
    split = rows.select_columns(list(FORMATS[form])).train_test_split(
        train_size=train_size, test_size=eval_size, seed=seed
    )
    return Task(train=split["train"], eval=split["test"], metric_names=SFT_METRICS)


def detect_format(columns: Sequence[str]) -> str:
    for form, needed in FORMATS.items():
        if all(column in columns for column in needed):
            return form
    raise ConfigError(f"data.source: no SFT columns in {list(columns)}; give text, prompt and completion, or messages")


def review_chats(
    tokenizer: Any, seed: int, source: str, train_size: int, eval_size: int, text_column: str, label_column: str
) -> Task:
    """The embedded reviews as chats: the user quotes a review, the assistant answers with its label."""
    from datasets import load_dataset

    from hpsearch.locate import resolve_location

    reviews = load_dataset("csv", data_files=resolve_location(source, "data.source"), split="train")

    def chat(row: dict[str, Any]) -> dict[str, Any]:
        question = f"Fresh or rotten? {row[text_column]}"
        return {
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": row[label_column]}]
        }

    chats = reviews.shuffle(seed=seed).select(range(min(len(reviews), train_size + eval_size))).map(chat)
    return split_task(chats, tokenizer, seed, train_size, eval_size)
