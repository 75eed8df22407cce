"""``python -m hpsearch`` as a user runs it: a real smoke search, and one clear line for every bad input."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support import cli_env, read_trials, run_command

CI = ["experiment=ci"]
HPSEARCH_CI = [sys.executable, "-m", "hpsearch", *CI]


def test_smoke_search_from_another_directory_learns(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """The Usage's smoke search: every trial beats the majority class (148 of the 256 eval rows), each scores
    differently, so the best trial is not an arbitrary pick among ties."""
    done = cli("experiment=smoke", "study_name=cli-smoke")
    assert done.returncode == 0, done.stderr
    scores = [float(row["eval_accuracy"]) for row in read_trials(tmp_path / "run")]
    assert len(scores) == 3 and min(scores) > 148 / 256 and len(set(scores)) == 3, scores
    assert "best trial" in done.stdout
    assert "\r" not in done.stderr + done.stdout  # not a terminal: no bar frames, one line per trial instead
    assert "(3/3 finished, best eval_accuracy=" in done.stdout
    logged = (tmp_path / "run" / "__main__.log").read_text()
    assert logged.count("trial COMPLETE") == 3
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert set(best) == {"trial", "objective", "hyperparameters", "metrics"}
    assert (tmp_path / ".hpsearch" / "cli-smoke.log").is_file()  # the default storage: optuna's journal file per study


def test_secrets_never_reach_saved_files(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    secret = "sk-test-0123456789abcdef"
    done = cli(
        *CI,
        "n_trials=1",
        f"+training.hub_token={secret}",
        "+data.notes=postgresql://bob:hunter2@db/x",
        WANDB_API_KEY=secret,
    )
    assert done.returncode == 0, done.stderr
    written = [
        p for p in (tmp_path / "run").rglob("*") if p.is_file() and p.suffix in (".yaml", ".json", ".csv", ".log")
    ]
    assert any(p.name == "overrides.yaml" for p in written)
    for path in written:
        text = path.read_text()
        assert secret not in text and "hunter2" not in text, path
    assert secret not in done.stdout + done.stderr


BAD_INPUTS = [  # (overrides, the one stderr line, the documented exit code)
    (["training.per_device_train_batch_size=0"], "training.per_device_train_batch_size: must be >= 1 (got 0)"),
    (["training.per_device_eval_batch_size=0"], "training.per_device_eval_batch_size: must be >= 1 (got 0)"),
    (["training.num_train_epochs=-1"], "training.num_train_epochs: must be > 0 (got -1)"),
    (["space.per_device_train_batch_size.choices=[0,16]"], "space.per_device_train_batch_size: 0 can never train"),
    (["+backend.samplr=tpe"], "backend.samplr: not a setting of backend; did you mean 'sampler'?"),
    (["backend.wait_s=fast"], "backend.wait_s: must be a number >= 0 (got 'fast')"),
    (["backend=nope"], "backend: unknown backend 'nope'; choose one of"),
    (["experiment=nope"], "experiment: unknown experiment 'nope'; choose one of"),
    (["space.learning_rate.low=1.0"], "space.learning_rate: low must be <= high (low=1.0, high=0.01)"),
    (["space.learning_rate.low=0.0"], "space.learning_rate: log scale needs low > 0 (low=0.0, high=0.01)"),
    (["space.per_device_train_batch_size.choices=[]"], "space.per_device_train_batch_size: choices must not be empty"),
    (
        ["+space.not_a_field={type:float,low:0.0,high:1.0}"],
        "space.not_a_field: neither a TrainingArguments field nor an argument of model_init",
    ),
    (
        ["objective.objectives.0.metric=eval_bleu"],
        "objective.objectives[0].metric: 'eval_bleu' is never returned by evaluation",
    ),
    (["n_trials=0"], "n_trials: must be an integer >= 1 (got 0)"),
    (["data.source=/no/such/file.csv"], "data.source: no such file '/no/such/file.csv'"),
    (["data.text_column=review"], "data.text_column: column 'review' does not exist; available: ['text', 'label']"),
    (["backend.sampler=annealing"], "backend.sampler: unknown sampler 'annealing'"),
    (["backend.pruner=median"], "backend.pruner=median: pruning needs in-training evaluation"),
    (
        ["training.learnin_rate=0.1"],
        "Could not override 'training.learnin_rate'; To append to your config use +training.learnin_rate=0.1; Key 'learnin_rate' is not in struct",
    ),
    (["+training.learnin_rate=0.1"], "training.learnin_rate: not a TrainingArguments field"),
    (["n_trial=3"], "n_trial: not a config key; did you mean 'n_trials'?"),
    (["+n_trial=3"], "n_trial: not a config key; did you mean 'n_trials'?"),
    (["+seeds=1"], "seeds: not a config key; did you mean 'seed'?"),
    (["storage=postgresql://u:pw@127.0.0.1:9/none"], "storage: cannot open postgresql://u:***@127.0.0.1:9/none"),
    (
        ["storage=grpc://127.0.0.1:9"],
        "storage: no gRPC storage proxy answers at grpc://127.0.0.1:9 (ConnectionError); start one with python -m hpsearch.storage_proxy",
    ),
    (["storage=grpc://proxy-host"], "storage=grpc://proxy-host: a gRPC storage proxy is grpc://HOST:PORT"),
    (["backend.grace_period_s=30"], "backend.grace_period_s=30: must be longer than backend.heartbeat_interval_s=60"),
    (["backend.heartbeat_interval_s=0.5"], "backend.heartbeat_interval_s: must be an integer >= 1 (got 0.5)"),
    (["training.learning_rate=abc"], "training.learning_rate: 'abc' is not a valid float; fix the value"),
    (["training.use_cpu=maybe"], "training.use_cpu: 'maybe' is not a valid bool; fix the value"),
    (["training.per_device_train_batch_size=1.5"], "training.per_device_train_batch_size: 1.5 is not a valid int"),
    (
        ["+model.tokenizer.vocab=9"],
        "model.tokenizer: cannot instantiate 'hpsearch.model.wordpiece_tokenizer' (TypeError: "
        "wordpiece_tokenizer() got an unexpected keyword argument 'vocab')",
    ),
    (
        ["trainer._target_=builtins.dict"],
        "trainer._target_: builtins.dict is not a transformers.Trainer subclass; name one",
    ),
    (["trainer._target_=nope.Trainer"], "trainer._target_: cannot import 'nope.Trainer'"),
    (["+space.r={type:categorical,choices:[4,8]}"], "space.r: a LoRA adapter setting, but peft=none; add peft=lora"),
    (["peft=lora", "peft.target_modules=[query,nope]"], "peft.target_modules: 'nope' is not a module of the model"),
    (["+constraints.c='learning_rate.real <= 1'"], "constraints.c: 'learning_rate.real <= 1' may hold numbers, names"),
    (["+space.learning_rate.when={nope: 1}"], "space.learning_rate.when: 'nope' is not a parameter of the space"),
    (
        ["warm_start.points=[{learning_rate: 1.0}]"],
        "warm_start.points[0].learning_rate=1.0: outside space.learning_rate",
    ),
    (["+warm_start.from.study_name=nope"], "warm_start.from.study_name=nope: backend=optuna holds no completed trial"),
]
EXIT_CODES = {
    "storage=postgresql://u:pw@127.0.0.1:9/none": 3,
    "storage=grpc://127.0.0.1:9": 3,
}  # backend or storage unavailable; the rest: config errors


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS, ids=[o[0] for o, _ in BAD_INPUTS])
def test_bad_input_exits_with_one_clear_line(
    cli: Callable[..., subprocess.CompletedProcess[str]], overrides: list[str], message: str
) -> None:
    done = cli(*CI, *overrides)
    assert done.returncode == EXIT_CODES.get(overrides[0], 2)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("trials:")]
    assert lines == [lines[0]] and lines[0].startswith("hpsearch: error: "), done.stderr
    assert message in lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_unreadable_data_file(cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"this is not parquet")
    done = cli(*CI, f"data.source={broken}")
    assert done.returncode == 2
    assert done.stderr.startswith(f"hpsearch: error: data.source: cannot read '{broken}' as parquet")
    assert "Traceback" not in done.stderr


MISSING = [
    (
        ["backend.sampler=cmaes"],
        "cmaes",
        "backend.sampler=cmaes needs the package 'cmaes', which is not installed; fix: pip install 'hpsearch[cmaes]'",
    ),
    (
        ["backend=ray"],
        "ray",
        "backend=ray needs the package 'ray[tune]', which is not installed; fix: pip install 'hpsearch[ray]'",
    ),
    (
        ["backend=wandb"],
        "wandb",
        "backend=wandb needs the package 'wandb', which is not installed; fix: pip install 'hpsearch[wandb]'",
    ),
    (
        ["backend=sigopt"],
        "sigopt",
        "backend=sigopt needs the package 'sigopt', which is not installed; fix: pip install 'hpsearch[sigopt]'",
    ),
    (
        ["tracking=wandb"],
        "wandb",
        "tracking=wandb needs the package 'wandb', which is not installed; fix: pip install 'hpsearch[wandb]'",
    ),
]


SWEEPS = [  # (a multirun override, the unknown option it names, or None when every option exists)
    ("backend=optuna,ray", None),
    ("backend=choice(optuna,sigopt)", None),
    ("experiment=ci,smoke_prune", None),
    ("backend=optuna,nope", "backend: unknown backend 'nope'; choose one of ['optuna', 'ray', 'sigopt', 'wandb']"),
    ("backend=choice(wandb,rayy)", "backend: unknown backend 'rayy'"),
    ("backend=range(1,3)", "backend: unknown backend '1'"),
    ("model=glob(tiny_*)", None),  # neither a list nor a range: Hydra resolves it
]


@pytest.mark.parametrize(("override", "message"), SWEEPS, ids=[override for override, _ in SWEEPS])
def test_sweep_values_are_checked_one_by_one(override: str, message: str | None) -> None:
    from hpsearch.config import check_group_choices
    from hpsearch.errors import ConfigError

    if message is None:
        check_group_choices([override, "seed=1,2"])
        return
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_group_choices([override])


@pytest.mark.parametrize(("overrides", "module", "message"), MISSING, ids=[m[0][0] for m in MISSING])
def test_missing_optional_package_gives_install_hint(
    cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
    overrides: list[str],
    module: str,
    message: str,
) -> None:
    shadow = tmp_path / "shadow" / module  # an import of it fails as if it were not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ModuleNotFoundError(\"No module named '{module}'\", name='{module}')\n")
    done = cli(*CI, *overrides, PYTHONPATH=f"{shadow.parent}:{cli_env()['PYTHONPATH']}", SIGOPT_API_TOKEN="t")
    assert done.returncode == 2
    assert done.stderr.strip() == f"hpsearch: error: {message}"


def _finished(journal: Path, states: tuple[str, ...] = ("COMPLETE", "PRUNED")) -> int:
    """Finished trials (or those in ``states``) in a study's default storage, optuna's journal file, read with
    optuna itself."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if not journal.exists():
        return 0
    try:
        study = optuna.load_study(study_name=journal.stem, storage=JournalStorage(JournalFileBackend(str(journal))))
    except KeyError:
        return 0
    return sum(trial.state.name in states for trial in study.trials)


@pytest.mark.slow
@pytest.mark.solo
def test_sigkill_then_rerun_loses_no_finished_trial(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "hpsearch",
        *CI,
        "n_trials=6",
        "study_name=resume",
        "data.train_size=400",
        "training.num_train_epochs=2",
        f"hydra.run.dir={tmp_path / 'first'}",
    ]
    db = tmp_path / ".hpsearch" / "resume.log"
    first = subprocess.Popen(args, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _finished(db) < 2 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    first.kill()  # SIGKILL: no handler runs
    first.wait()
    finished_before = _finished(db)
    assert 2 <= finished_before < 6, "the first run must be killed mid-search"

    args[-1] = f"hydra.run.dir={tmp_path / 'second'}"
    second = run_command(args, tmp_path, timeout=180)
    assert second.returncode == 0, second.stderr
    rows = (tmp_path / "second" / "trials.csv").read_text().splitlines()[1:]
    states = [row.split(",")[1] for row in rows]
    assert states.count("COMPLETE") == 6  # total reaches n_trials
    assert _finished(db) == 6
    # the trials finished before the kill are still there, with their numbers
    assert all(state == "COMPLETE" for state in states[:finished_before])


@pytest.mark.slow
@pytest.mark.solo
def test_a_trial_killed_in_a_single_process_search_is_failed_when_workers_resume_the_study(tmp_path: Path) -> None:
    """kill -9 mid-trial of a one-process search, then ``workers=2`` on the same study with a larger n_trials: the
    killed trial's process is gone, so its trial is failed at once and the search reaches n_trials."""
    first_args = [
        *HPSEARCH_CI,
        "n_trials=2",
        "study_name=orphan",
        "data.train_size=400",
        "training.num_train_epochs=3",
        f"hydra.run.dir={tmp_path / 'first'}",
    ]
    db = tmp_path / ".hpsearch" / "orphan.log"
    first = subprocess.Popen(
        first_args, cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while _finished(db, states=("RUNNING",)) < 1 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    first.kill()
    first.wait()
    assert _finished(db, states=("RUNNING",)) == 1, "the first run must be killed mid-trial"
    second = run_command(
        [  # the same data: a study refuses a rerun on other data
            *HPSEARCH_CI,
            "n_trials=3",
            "workers=2",
            "study_name=orphan",
            "data.train_size=400",
            f"hydra.run.dir={tmp_path / 'second'}",
        ],
        tmp_path,
        timeout=240,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert _finished(db) == 3
    assert _finished(db, states=("RUNNING", "WAITING")) == 0


@pytest.mark.slow
@pytest.mark.solo
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_fails_the_running_trial_writes_results_and_leaves_the_study_resumable(
    tmp_path: Path, signum: signal.Signals
) -> None:
    args = [
        sys.executable,
        "-m",
        "hpsearch",
        *CI,
        "n_trials=5",
        "study_name=interrupt",
        "data.train_size=400",
        "training.num_train_epochs=4",
        f"hydra.run.dir={tmp_path / 'first'}",
    ]  # trials of seconds: Ctrl-C lands mid-search
    db = tmp_path / ".hpsearch" / "interrupt.log"
    first = subprocess.Popen(
        args, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while _finished(db) < 1 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert first.poll() is None, "the search ended before it could be interrupted"
    first.send_signal(signum)
    _, stderr = first.communicate(timeout=60)
    assert first.returncode == 130
    assert "hpsearch: error: interrupted; the study is saved, rerun the same command to resume it" in stderr
    assert (tmp_path / "first" / "trials.csv").is_file()  # results so far are written on the way out
    finished = _finished(db)
    assert 1 <= finished < 5
    assert _finished(db, states=("RUNNING", "WAITING")) == 0  # the trial it was training is failed, not left

    args[-1] = f"hydra.run.dir={tmp_path / 'second'}"
    second = run_command(args, tmp_path, timeout=180)
    assert second.returncode == 0, second.stderr
    assert _finished(db) == 5


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "hpsearch"
    done = run_command([str(script), "backend=nope"], tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("hpsearch: error: backend: unknown backend 'nope'")


def test_space_overriding_a_training_value_is_logged_once(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(*CI, "n_trials=1", "training.learning_rate=0.5")
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run" / "__main__.log").read_text()
    assert log.count("the search space sets learning_rate, per_device_train_batch_size") == 1
    assert "training.learning_rate=0.5" in log


def test_masking_keeps_names_that_only_contain_a_secret_word() -> None:
    from hpsearch.config import REDACTED, redacted

    masked = redacted(
        {
            "model": {"tokenizer": {"_target_": "hpsearch.model.char_tokenizer"}},
            "training": {"average_tokens_across_devices": False, "hub_token": "hf_secret", "max_tokens": 7},
            "backend": {"api_key": "k", "wandb_api_key": "w", "password": "p", "client_secret": "s"},
        }
    )
    assert masked["model"]["tokenizer"] == {"_target_": "hpsearch.model.char_tokenizer"}
    assert masked["training"] == {"average_tokens_across_devices": False, "hub_token": REDACTED, "max_tokens": 7}
    assert set(masked["backend"].values()) == {REDACTED}


def test_saved_config_is_the_resolved_config(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    import yaml

    done = cli(*CI, "n_trials=1")
    assert done.returncode == 0, done.stderr
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["tokenizer"]["_target_"] == "hpsearch.model.wordpiece_tokenizer"
    assert saved["training"]["average_tokens_across_devices"] is False


def test_help_names_the_app_and_shows_usage(tmp_path: Path) -> None:
    done = run_command([sys.executable, "-m", "hpsearch", "--help"], tmp_path, timeout=60)
    assert done.returncode == 0
    assert "__main__ is powered by Hydra" not in done.stdout
    assert done.stdout.startswith("hpsearch: hyperparameter search for Hugging Face transformers")
    usage = done.stdout.index("python -m hpsearch backend=optuna")
    assert usage < done.stdout.index("== Configuration groups ==")
    assert "backend: optuna, ray, sigopt, wandb" in done.stdout
    assert "Exit codes: 0 done, 1 an unexpected error (a bug), 2 config error" in done.stdout


def test_version_is_hpsearchs_own(tmp_path: Path) -> None:
    from hpsearch import __version__

    done = run_command([sys.executable, "-m", "hpsearch", "--version"], tmp_path, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, f"hpsearch {__version__}")


def test_compare_help_shows_no_markup(tmp_path: Path) -> None:
    done = run_command([sys.executable, "-m", "hpsearch", "compare", "--help"], tmp_path, timeout=60)
    assert done.returncode == 0 and "searches side by side" in done.stdout
    assert "``" not in done.stdout


def test_smoke_trains_on_the_readmes_split_file_mapping(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """``data.source={train: ..., validation: ...}``: the data and the smoke tokenizer's corpus read the files."""
    import gzip

    import hpsearch

    rows = gzip.decompress((Path(hpsearch.__file__).parent / "resources" / "rotten_tomatoes.csv.gz").read_bytes())
    lines = rows.decode().splitlines()
    (tmp_path / "train.csv").write_text("\n".join(lines[:301]) + "\n")
    (tmp_path / "validation.csv").write_text("\n".join([lines[0], *lines[301:338]]) + "\n")
    done = cli(
        *CI,
        "n_trials=1",
        f"data.source={{train: {tmp_path / 'train.csv'}, validation: {tmp_path / 'validation.csv'}}}",
        "data.eval_split=validation",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data.eval_size=128: the split has only 37 rows; using all of them" in done.stderr + done.stdout
    assert [row["state"] for row in read_trials(tmp_path / "run")] == ["COMPLETE"]


def test_a_grid_that_runs_out_before_n_trials_exits_6(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(
        *CI,
        "n_trials=3",
        "backend.sampler=grid",
        "~space",
        "+space={per_device_train_batch_size:{type:categorical,choices:[16,32]}}",
    )
    assert done.returncode == 6, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "hpsearch: error: n_trials=3: the search ended with 2 finished trials: the backend has no more to suggest "
        "(a grid, or a space of few points, ran out); widen the space or lower n_trials"
    )
    assert [row["state"] for row in read_trials(tmp_path / "run")] == ["COMPLETE", "COMPLETE"]


@pytest.mark.parametrize("backend", ["optuna", "wandb"])
def test_a_rerun_that_changes_what_defines_the_study_is_a_config_error(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Separate commands on one study_name: another model is refused, more trials resume it. optuna keeps the
    definition in the study; the others (here W&B's offline engine) beside the study's state."""
    search = [*CI, f"backend={backend}", *(["backend.method=random"] if backend == "wandb" else [])]
    for name in ("WANDB_BASE_URL", "WANDB_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = cli(*search, "n_trials=1")
    assert first.returncode == 0, first.stderr[-3000:]
    changed = cli(*search, "n_trials=1", "data.train_size=200", "model.model_init.hidden_size=32")
    assert changed.returncode == 2
    assert changed.stderr.strip().splitlines()[-1] == (
        "hpsearch: error: model.model_init.hidden_size: study_name=ci was searched with 64, this run has 32; "
        "keep the study's model.model_init.hidden_size, or start a new study with study_name=ci-2"
    )
    more = cli(*search, "n_trials=2", "progress=false", "workers=1")
    assert more.returncode == 0, more.stderr[-3000:]
    assert len(read_trials(tmp_path / "run")) == 2


def test_on_a_terminal_the_first_line_comes_at_once_and_the_running_trial_shows_its_steps(tmp_path: Path) -> None:
    """Under a pseudo-terminal, as a user runs it: a line before the slow imports, then the trials bar and the
    running trial's steps bar with its latest evaluation."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios
    import time

    command = [*HPSEARCH_CI, "n_trials=1", "training.eval_strategy=steps", "training.eval_steps=4"]
    command += [f"hydra.run.dir={tmp_path / 'run'}"]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: the command, on a 40x120 terminal (a new pseudo-terminal has no size)
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.chdir(tmp_path)
        os.execvpe(command[0], command, cli_env())
    started, output, first_at = time.monotonic(), b"", None
    while True:
        ready, _, _ = select.select([terminal], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        if first_at is None and b"loading libraries, model and data" in output:
            first_at = time.monotonic() - started
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text[-3000:]
    # Before transformers is imported: sooner than a bare import of its Trainer takes here, measured now, so
    # that the bound holds on a slow or busy machine too (it is about 1 s against 9 s on 2 cores).
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "from transformers import Trainer"], check=True, env=cli_env())
    assert first_at is not None and first_at < time.monotonic() - started, text[:500]
    assert "trials:" in text and "steps:" in text and "eval_accuracy=" in text


def test_a_run_that_fails_on_its_config_leaves_nothing_behind(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(*CI, "data.source=/no/such/file.csv")
    assert done.returncode == 2
    assert not (tmp_path / "run").exists()  # no folder holding only .hydra/ and an empty log
    assert not [path for path in tmp_path.glob(".hpsearch/**/*") if path.is_file()]  # nor an empty journal file


def test_unknown_top_level_keys_are_refused_through_the_python_api_too(make_config: Callable[..., Any]) -> None:
    from hpsearch.app import run
    from hpsearch.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^n_trial: not a config key; did you mean 'n_trials'\?$"):
        run(make_config("experiment=ci", "+n_trial=3"))
