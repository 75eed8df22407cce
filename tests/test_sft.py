"""TRL's ``SFTTrainer`` with LoRA (``experiment=lora_sft_smoke``): the three forms of SFT data, and the search on
every backend, with workers and under torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig
from support import EVERY_BACKEND, random_search, read_trials, requires, torchrun

from hpsearch.errors import ConfigError

pytestmark = requires("peft", "trl")

FORMS = [
    (["text"], "text"),
    (["prompt", "completion", "id"], "prompt_completion"),
    (["messages"], "messages"),
    (["sentence", "label"], None),
]


@pytest.mark.parametrize(("columns", "form"), FORMS)
def test_the_columns_tell_the_form_of_sft_data(columns: list[str], form: str | None) -> None:
    from hpsearch.sft import detect_format

    if form is not None:
        assert detect_format(columns) == form
        return
    with pytest.raises(ConfigError, match=r"data.source: no SFT columns in \['sentence', 'label'\]"):
        detect_format(columns)


def test_chat_data_needs_a_tokenizer_with_a_chat_template(make_config: Callable[..., DictConfig]) -> None:
    from hpsearch.app import run

    with pytest.raises(ConfigError, match=r"model.tokenizer: chat data .* needs a tokenizer with a chat template"):
        run(make_config("experiment=lora_sft_smoke", "model.tokenizer._target_=hpsearch.model.wordpiece_tokenizer"))


def test_a_prompt_completion_file_trains_with_sft_trainer(
    make_config: Callable[..., DictConfig], tmp_path: Path
) -> None:
    from hpsearch.app import run

    source = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Review {index}: fine film.", "completion": " fresh"} for index in range(40)]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cfg = make_config(
        "experiment=lora_sft_smoke",
        "n_trials=1",
        "~data",
        f"+data={{_target_:hpsearch.sft.sft_task,source:'{source}',train_size:32,eval_size:8}}",
    )
    result = run(cfg)
    assert [trial.state.value for trial in result.trials] == ["COMPLETE"]
    assert result.trials[0].metrics["eval_loss"] > 0


def assert_lora_sft_search(run_dir: Path, n_trials: int = 3, sizes_kept: bool = True) -> None:
    """Every trial complete, and each r its own adapter size."""
    rows = read_trials(run_dir)
    assert [row["state"] for row in rows] == ["COMPLETE"] * n_trials, rows
    if not sizes_kept:
        return
    sizes = {row["r"]: row["model_trainable_parameters"] for row in rows}
    assert len(set(sizes.values())) == len(sizes), sizes


@pytest.mark.slow
@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_the_lora_sft_search_runs_on_every_backend(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, backend: str
) -> None:
    search, env = random_search(backend)
    done = cli("experiment=lora_sft_smoke", *search, timeout=300, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_lora_sft_search(tmp_path / "run", sizes_kept=backend != "sigopt")  # sigoptlite keeps no metadata


@pytest.mark.slow
@pytest.mark.solo
def test_the_lora_sft_search_with_two_workers(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli("experiment=lora_sft_smoke", "backend.sampler=random", "n_trials=4", "workers=2", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_lora_sft_search(tmp_path / "run", n_trials=4)


@pytest.mark.slow
@pytest.mark.solo
def test_the_lora_sft_search_under_torchrun(tmp_path: Path) -> None:
    done = torchrun(tmp_path, "experiment=lora_sft_smoke", "backend.sampler=random")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_lora_sft_search(tmp_path / "run")
    ranks = [json.loads(line) for line in (tmp_path / "run" / "ranks.jsonl").read_text().splitlines()]
    for trial in range(3):  # DDP kept both ranks' adapters in sync
        assert len({entry["checksum"] for entry in ranks if entry["trial"] == trial}) == 1, ranks


@pytest.mark.slow
def test_the_example_script_runs_the_same_search_through_the_python_api(tmp_path: Path) -> None:
    from support import run_command

    script = Path(__file__).parent.parent / "examples" / "lora_sft_search.py"
    done = run_command([sys.executable, str(script)], tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "lora_sft_script").iterdir()
    assert_lora_sft_search(run_dir)
    assert "best trial" in done.stdout
