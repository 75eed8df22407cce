"""Locally built tokenizers: the same ids in every process, so DDP ranks, workers and reruns agree."""

from __future__ import annotations

import json
import subprocess
import sys

from hpsearch.model import wordpiece_tokenizer

CORPUS = "pkg:hpsearch/resources/rotten_tomatoes.csv.gz"
PRINT_VOCAB = (
    "import json; from hpsearch.model import wordpiece_tokenizer; "
    f"print(json.dumps(wordpiece_tokenizer({CORPUS!r}).get_vocab(), sort_keys=True))"
)


def test_wordpiece_vocabulary_is_the_same_in_every_process() -> None:
    vocabularies = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", PRINT_VOCAB], capture_output=True, text=True, check=True, timeout=120
            ).stdout
        )
        for _ in range(2)
    ]
    assert len(vocabularies[0]) == 2000
    assert vocabularies[1] == vocabularies[0]


def test_frequent_words_are_whole_tokens_and_others_split_into_characters() -> None:
    tokenizer = wordpiece_tokenizer(CORPUS, vocab_size=600)
    assert len(tokenizer.get_vocab()) == 600
    assert tokenizer.tokenize("The film") == ["the", "film"]
    assert tokenizer.tokenize("zyzzyva") == ["z", "##y", "##z", "##z", "##y", "##v", "##a"]
    pair = tokenizer("a film", "the end")
    assert pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]  # [CLS] a film [SEP] the end [SEP]
