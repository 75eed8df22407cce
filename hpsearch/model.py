"""Tokenizers and ``model_init`` callables referenced from ``conf/model/*.yaml``.

A ``model_init`` target is any importable callable. hpsearch passes it, by keyword and only where its
signature asks for them, ``num_labels``, ``id2label``, ``label2id`` and ``tokenizer``, plus every
search-space parameter whose name matches one of its arguments (e.g. ``hidden_dropout_prob``).
"""

from __future__ import annotations

import functools
import inspect
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from hpsearch.errors import ConfigError
from hpsearch.locate import resolve_location

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def pretrained_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """A tokenizer from a hub name, a local directory, or a ``pkg:`` location."""
    return AutoTokenizer.from_pretrained(resolve_location(name_or_path, "model.tokenizer.name_or_path"))


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A lower-cased character-level WordPiece tokenizer built locally, for tests and smoke runs."""
    characters = string.ascii_lowercase + string.digits + string.punctuation
    return _wordpiece(list(characters), [])


def wordpiece_tokenizer(
    corpus: str | Mapping[str, str], text_column: str | Sequence[str] = "text", vocab_size: int = 2000
) -> PreTrainedTokenizerFast:
    """A lower-cased WordPiece tokenizer built locally from a csv corpus's text column(s) (no labels are read):
    every character seen, and the most frequent words up to ``vocab_size``; other words split into characters.
    A mapping of split names to files (``data.source={train: ..., validation: ...}``) gives its train file.

    The same corpus always gives the same ids, in every process. ``tokenizers``' own WordPiece trainer does
    not: its ties fall differently in each process, so DDP ranks, workers and reruns would disagree on ids.
    """
    import pandas as pd

    if isinstance(corpus, Mapping):
        if "train" not in corpus:
            raise ConfigError(f"model.tokenizer.corpus: a mapping of splits needs a train file (got {sorted(corpus)})")
        corpus = str(corpus["train"])
    columns = [text_column] if isinstance(text_column, str) else list(text_column)
    frame = pd.read_csv(resolve_location(corpus, "model.tokenizer.corpus"), usecols=columns)
    normalizer, pre_tokenizer = _bert_word_splitting()
    counts = Counter(
        word
        for text in pd.concat([frame[column] for column in columns]).astype(str)
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    characters = sorted({character for word in counts for character in word})
    room = vocab_size - len(SPECIAL_TOKENS) - 2 * len(characters)
    words = sorted((word for word in counts if len(word) > 1), key=lambda word: (-counts[word], word))
    return _wordpiece(characters, words[: max(room, 0)])


# Each message as "[role] content [SEP]": [SEP] doubles as the end-of-sequence token a causal LM learns to stop at.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '[' + message['role'] + '] ' + message['content'] + ' [SEP] ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}"
)


def chat_tokenizer(
    corpus: str | Mapping[str, str], text_column: str | Sequence[str] = "text", vocab_size: int = 2000
) -> PreTrainedTokenizerFast:
    """``wordpiece_tokenizer`` with a chat template and ``[SEP]`` as its end-of-sequence token, for chat data
    (``apply_chat_template``) and TRL's ``SFTTrainer``, built locally."""
    tokenizer = wordpiece_tokenizer(corpus, text_column, vocab_size)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.eos_token = "[SEP]"
    return tokenizer


def _wordpiece(characters: Sequence[str], words: Sequence[str]) -> PreTrainedTokenizerFast:
    """BERT-style WordPiece over a fixed vocabulary (special tokens, characters, ``##``characters, whole words),
    with BERT's [CLS] ... [SEP] template."""
    from tokenizers import Tokenizer, models, processors

    vocab_list = [*SPECIAL_TOKENS, *characters, *(f"##{c}" for c in characters), *words]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer, backend.pre_tokenizer = _bert_word_splitting()
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],  # BERT's segment ids for text pairs
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def _bert_word_splitting() -> tuple[Any, Any]:
    """BERT's lower-casing, accent stripping and split into words: one definition, so that the words a
    vocabulary is counted from are the words the tokenizer later looks up."""
    from tokenizers import normalizers, pre_tokenizers

    return normalizers.BertNormalizer(lowercase=True, strip_accents=True), pre_tokenizers.BertPreTokenizer()


def pretrained_classifier(
    name_or_path: str,
    num_labels: int,
    id2label: dict[int, str],
    label2id: dict[str, int],
    hidden_dropout_prob: float | None = None,
    attention_probs_dropout_prob: float | None = None,
    num_hidden_layers: int | None = None,
) -> PreTrainedModel:
    """A pretrained encoder with a fresh classification head.

    ``num_hidden_layers`` keeps only the first N encoder layers, so a search can trade accuracy for size.
    """
    location = resolve_location(name_or_path, "model.model_init.name_or_path")
    overrides = {
        key: value
        for key, value in {
            "hidden_dropout_prob": hidden_dropout_prob,
            "attention_probs_dropout_prob": attention_probs_dropout_prob,
            "num_hidden_layers": num_hidden_layers,
        }.items()
        if value is not None
    }
    config = AutoConfig.from_pretrained(
        location, num_labels=num_labels, id2label=id2label, label2id=label2id, **overrides
    )
    model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(location, config=config)
    return model


def tiny_bert(
    num_labels: int,
    id2label: dict[int, str],
    label2id: dict[str, int],
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    hidden_dropout_prob: float = 0.1,
    vocab_size: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised BERT classifier, small by default; ``vocab_size`` (default: the tokenizer's)
    sizes the embeddings as a real model's would, for benchmarks."""
    config = BertConfig(  # type: ignore[call-arg] # num_labels and the label maps go to PretrainedConfig
        vocab_size=vocab_size or len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        hidden_dropout_prob=hidden_dropout_prob,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
        id2label=id2label,
        label2id=label2id,
    )
    return BertForSequenceClassification(config)


def tiny_gpt2(
    tokenizer: PreTrainedTokenizerBase,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 2,
    resid_pdrop: float = 0.1,
    n_positions: int = 256,
) -> PreTrainedModel:
    """A randomly initialised GPT-2-shaped causal language model, small by default."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=resid_pdrop,
        n_positions=n_positions,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def tiny_llama(
    tokenizer: PreTrainedTokenizerBase,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 256,
) -> PreTrainedModel:
    """A randomly initialised Llama-shaped causal language model, small by default (LoRA searches' smoke)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.cls_token_id,
    )
    return LlamaForCausalLM(config)


class NothingAfterTrial:
    """A model builder that leaves nothing to undo after a trial, and records no facts of its models."""

    def release(self) -> None:
        """Nothing to undo: the next trial builds (or loads back) its own model."""

    def describe(self, model: Any) -> dict[str, float]:
        """No per-trial facts beyond the trainer's own."""
        return {}


@dataclass(frozen=True)
class ModelInit(NothingAfterTrial):
    """Calls the configured target with its static arguments, overridden by the trial's matching hyperparameters.

    A plain picklable object, so Ray workers can receive it.
    """

    target: Callable[..., PreTrainedModel]
    static_kwargs: Mapping[str, Any]
    consumed: frozenset[str]

    @classmethod
    def build(cls, target: Callable[..., Any], context: Mapping[str, Any]) -> ModelInit:
        """``target`` may be a ``functools.partial`` carrying the configured arguments."""
        function = target.func if isinstance(target, functools.partial) else target
        configured = dict(target.keywords) if isinstance(target, functools.partial) else {}
        parameters = inspect.signature(function).parameters
        injected = {key: value for key, value in context.items() if key in parameters}
        return cls(function, {**configured, **injected}, frozenset(parameters) - set(injected))

    def __call__(self, params: Mapping[str, Any]) -> PreTrainedModel:
        chosen = {key: value for key, value in params.items() if key in self.consumed}
        model = self.target(**{**self.static_kwargs, **chosen})
        if model is None:
            raise ConfigError("model.model_init: the target returned None; it must return a model")
        return model


class StartingWeights(NothingAfterTrial):
    """Each trial starts from a given model (``hpsearch.search`` on a Trainer without ``model_init``): its
    weights as given, kept on the CPU, are loaded back before every trial. ``keep=False`` for a LoRA base,
    which the adapter leaves as it was."""

    consumed: frozenset[str] = frozenset()

    def __init__(self, model: Any, keep: bool = True) -> None:
        self.model = model
        self.target: Callable[..., Any] = type(model)
        self._weights = (
            {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()} if keep else None
        )

    def __call__(self, params: Mapping[str, Any]) -> Any:
        if self._weights is not None:
            self.model.load_state_dict(self._weights)
        return self.model


class GivenModelInit(NothingAfterTrial):
    """A Trainer's own ``model_init`` (``hpsearch.search``), called as transformers calls it: with no argument,
    or with the trial, here the trial's values as a dict, which it may read the parameters in ``consumed`` from."""

    def __init__(self, function: Callable[..., Any], consumed: frozenset[str]) -> None:
        self.target = function
        self.takes_trial = len(inspect.signature(function).parameters) > 0
        self.consumed = consumed if self.takes_trial else frozenset()

    def __call__(self, params: Mapping[str, Any]) -> Any:
        model = self.target(dict(params)) if self.takes_trial else self.target()
        if model is None:
            raise ConfigError("hpsearch.search: the trainer's model_init returned None; it must return a model")
        return model


class TrialModels(Protocol):
    """What builds each trial's model: ``ModelInit``, or ``hpsearch.peft.AdaptedModelInit`` for a LoRA search."""

    @property
    def target(self) -> Callable[..., Any]: ...

    @property
    def consumed(self) -> frozenset[str]: ...

    def __call__(self, params: Mapping[str, Any]) -> Any: ...

    def release(self) -> None:
        """Undo what building a trial's model did to anything kept for the next trial."""

    def describe(self, model: Any) -> dict[str, float]:
        """Facts about a trial's model recorded with its metrics (e.g. trainable parameters)."""
