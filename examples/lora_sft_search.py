"""experiment=lora_sft_smoke from a script: a TRL SFTTrainer built as usual, searched with one more line.

    python examples/lora_sft_search.py          # the same search as: python -m hpsearch experiment=lora_sft_smoke

Needs pip install 'hpsearch[peft,trl]'. Results go to outputs/<study_name>/<time>/, as from the CLI.
"""

from __future__ import annotations

from trl import SFTConfig, SFTTrainer

import hpsearch
from hpsearch.model import chat_tokenizer, tiny_llama
from hpsearch.sft import review_chats

REVIEWS = "pkg:hpsearch/resources/rotten_tomatoes.csv.gz"


def main() -> None:
    tokenizer = chat_tokenizer(REVIEWS, "text", vocab_size=2000)
    chats = review_chats(tokenizer, 42, REVIEWS, train_size=256, eval_size=64, text_column="text", label_column="label")
    args = SFTConfig(
        output_dir="sft",
        num_train_epochs=1,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        max_length=64,
        gradient_checkpointing=False,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=tiny_llama(tokenizer),
        args=args,
        train_dataset=chats.train,
        eval_dataset=chats.eval,
        processing_class=tokenizer,
    )
    result = hpsearch.search(
        trainer,
        space={
            "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "r": {"type": "categorical", "choices": [4, 8, 16]},
            "alpha_over_r": {"type": "categorical", "choices": [0.5, 1.0, 2.0]},
        },
        peft={"target_modules": "all-linear"},
        objective="eval_loss",
        n_trials=3,
        study_name="lora_sft_script",
    )
    assert result.best is not None
    print(f"best trial {result.best.number}: {result.best.params}")
    print(result.trials[["number", "state", "r", "alpha_over_r", "eval_loss", "model_trainable_parameters"]])


if __name__ == "__main__":
    main()
