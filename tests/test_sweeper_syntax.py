"""Hydra's sweeper syntax in the space: each string becomes the distribution the hydra-optuna-sweeper makes of
it (its own translation table, ``create_optuna_distribution_from_override``), through hpsearch's optuna adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from support import compose_config, read_trials

from hpsearch.app import run
from hpsearch.backends.optuna.space import distribution
from hpsearch.errors import SearchSpaceError
from hpsearch.space import SearchSpace, parse_param

AS_THE_SWEEPER_TRANSLATES = [
    ("choice(1, 2)", CategoricalDistribution([1, 2])),
    ("choice(true, false)", CategoricalDistribution([True, False])),
    ("choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("shuffle(range(1, 3))", CategoricalDistribution([1, 2])),  # Hydra's range: 3 left out
    ("range(1, 3)", IntDistribution(1, 3)),  # the sweeper's range: 3 included
    ("range(2, 10, 4)", IntDistribution(2, 10, step=4)),
    ("range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
    ("range(0.0, 0.3, 0.1)", FloatDistribution(0.0, 0.3, step=0.1)),
    ("interval(1, 5)", FloatDistribution(1.0, 5.0)),  # interval always gives floats
    ("interval(0.0001, 0.1)", FloatDistribution(0.0001, 0.1)),
    ("int(interval(1, 5))", IntDistribution(1, 5)),
    ("tag(log, interval(1, 5))", FloatDistribution(1.0, 5.0, log=True)),
    ("tag(log, interval(1e-5, 1e-3))", FloatDistribution(1e-5, 1e-3, log=True)),
    ("tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
]


@pytest.mark.parametrize(("sweep", "expected"), AS_THE_SWEEPER_TRANSLATES)
def test_a_sweep_string_becomes_the_sweepers_own_distribution(sweep: str, expected: BaseDistribution) -> None:
    translated = distribution(parse_param("x", sweep))
    assert translated == expected  # optuna's distributions are equal only with the same class and attributes


@pytest.mark.parametrize("value", ["0.5", "abc", "3"])
def test_a_plain_string_is_not_a_sweep_and_names_the_fix(value: str) -> None:
    with pytest.raises(SearchSpaceError) as raised:
        parse_param("x", value)
    message = str(raised.value)
    assert message.startswith("space.x: expected a mapping with a 'type' key or a Hydra sweep string")
    assert f"{{type: fixed, value: {value}}}" in message and "\n" not in message


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("choice(1, 2", "space.lr: 'choice(1, 2' is neither a mapping nor a Hydra sweep"),
        ("glob(*)", "space.lr: 'glob(*)' is a sweep the optuna sweeper cannot translate either"),
        ("interval(0.1, 0.0001)", "space.lr: low must be <= high"),
        ("range(1, 5, 3)", "space.lr: high - low must be a multiple of step"),
        ("tag(log, interval(0, 1))", "space.lr: log scale needs low > 0"),
    ],
)
def test_a_bad_sweep_string_is_one_line_naming_the_key(sweep: str, message: str) -> None:
    with pytest.raises(SearchSpaceError) as raised:
        parse_param("lr", sweep)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_the_lightning_hydra_template_example_searches_with_its_params_block(tmp_path: Path) -> None:
    """experiment=hparams_search: mnist_optuna.yaml's sweep strings as written there, the keys renamed."""
    overrides = [
        "n_trials=2",
        "data.train_size=32",
        "data.eval_size=16",
        "data.max_length=16",
        "training.num_train_epochs=1",
    ]
    cfg = compose_config(["experiment=hparams_search", *overrides], tmp_path)
    space = SearchSpace.from_config(cfg.space)
    assert distribution(space["learning_rate"]) == FloatDistribution(0.0001, 0.1)
    assert distribution(space["per_device_train_batch_size"]) == CategoricalDistribution([32, 64, 128, 256])
    run(cfg)
    rows = read_trials(tmp_path / "run")
    assert [row["state"] for row in rows] == ["COMPLETE", "COMPLETE"]
    for row in rows:
        assert 0.0001 <= float(row["learning_rate"]) <= 0.1
        assert int(row["per_device_train_batch_size"]) in (32, 64, 128, 256)


def test_a_command_line_override_may_be_a_sweep_string(tmp_path: Path) -> None:
    """Quoted for Hydra, a sweep string replaces a parameter's mapping from the command line."""
    cfg = compose_config(["space.learning_rate='tag(log, interval(1e-3, 5e-3))'"], tmp_path)
    assert distribution(SearchSpace.from_config(cfg.space)["learning_rate"]) == FloatDistribution(1e-3, 5e-3, log=True)
