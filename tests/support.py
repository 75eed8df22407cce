"""What many tests share: running the CLI, composing configs, reading results back, and skip conditions.

Not a test module and not a fixture file: tests import from here, never from each other or from conftest.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from standins.wandb_server import WandbStandIn

from hpsearch.config import config_dir
from hpsearch.results import TRIALS_CSV

TESTS_DIR = Path(__file__).resolve().parent
POSTGRES_URL = os.environ.get("HPSEARCH_TEST_POSTGRES_URL")
FAILING_MODEL = [  # a tiny BERT that raises for hidden_dropout_prob=0.1, so exactly the trials drawing it fail
    "model.model_init._target_=helpers.failing_tiny_bert",
    "+model.model_init.fail_when=0.1",
    "~model.model_init.hidden_size",
    "~model.model_init.num_hidden_layers",
    "~model.model_init.num_attention_heads",
    "~model.model_init.intermediate_size",
    "~space",
    "+space={hidden_dropout_prob:{type:categorical,choices:[0.0,0.1]}}",
    "backend.sampler=grid",
]


def requires(*modules: str, postgres: bool = False) -> pytest.MarkDecorator:
    """Skip unless every module imports and, with ``postgres``, a PostgreSQL server is given
    (``HPSEARCH_TEST_POSTGRES_URL``, which ``.ci/postgres.sh`` prints); as lightning-hydra-template's ``run_if``."""
    missing = [
        module for module in modules if importlib.util.find_spec(module.split(".")[0]) is None or not _imports(module)
    ]
    reasons = [f"needs {', '.join(missing)}"] if missing else []
    if postgres and not POSTGRES_URL:
        reasons.append("set HPSEARCH_TEST_POSTGRES_URL (see .ci/postgres.sh)")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons) or "ok")


def _imports(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def read_trials(run_dir: Path) -> list[dict[str, str]]:
    """A run directory's ``trials.csv``, one dict per row."""
    with (run_dir / TRIALS_CSV).open() as handle:
        return list(csv.DictReader(handle))


def compose_config(overrides: Sequence[str], workdir: Path) -> DictConfig:
    """The config ``python -m hpsearch`` would build, with run and storage dirs inside ``workdir``."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                f"run_dir={workdir / 'run'}",
                f"storage_dir={workdir / 'studies'}",
                "progress=false",
                *overrides,
            ],
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    env.pop("HYDRA_FULL_ERROR", None)
    return {**env, **extra}


def run_command(command: Sequence[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess[str]:
    """A command as a user runs it: a separate process in ``cwd``, with tests/ importable, its output captured."""
    return subprocess.run(
        list(command), cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=timeout, check=False
    )


def run_cli(args: Sequence[str], cwd: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m hpsearch ARGS`` in ``cwd``, with tests/ importable for helper model_init targets; a leading
    ``-m`` stays first, where Hydra's parser wants it."""
    multirun = ["-m"] if list(args[:1]) == ["-m"] else []
    command = [sys.executable, "-m", "hpsearch", *multirun, f"hydra.run.dir={cwd / 'run'}", *args[len(multirun) :]]
    return run_command(command, cwd, timeout, **env)


def wandb_env(server: WandbStandIn) -> dict[str, str]:
    """Point the real wandb client at the W&B stand-in; runs are written offline."""
    return {
        "WANDB_BASE_URL": server.url,
        "WANDB_API_KEY": server.api_key,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }


@dataclass
class Served:
    """A backend as a test runs it: its overrides, the environment pointing its client at a stand-in server, and
    that server (None for optuna, whose study is a local file, and for Ray's local runtime)."""

    backend: str
    overrides: list[str]
    env: dict[str, str] = field(default_factory=dict)
    server: Any = None

    def handed_out(self) -> int:
        """How many trials the server handed out: SigOpt observations, W&B suggestions (one sweep each)."""
        if self.backend == "sigopt":
            (observations,) = self.server.observations.values()
            return len(observations)
        (issued,) = self.server.issued.values()
        return len(issued)


TORCHRUN_TIME_BOX = 180  # seconds a torchrun job of a test may take


def torchrun(
    tmp_path: Path, *overrides: str, nproc: int = 2, name: str = "run", restarts: int = 0, **env: str
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        f"--max-restarts={restarts}",
        "-m",
        "hpsearch",
        f"hydra.run.dir={tmp_path / name}",
        "training.ddp_timeout=20",
        "progress=false",
        *overrides,
    ]
    scratch = tmp_path / "tmp"  # the ranks' temp folder, to check that they leave nothing there
    scratch.mkdir(exist_ok=True)
    loopback = {"GLOO_SOCKET_IFNAME": "lo", "TMPDIR": str(scratch)}  # keep gloo's traffic on 127.0.0.1
    done = run_command(command, tmp_path, timeout=TORCHRUN_TIME_BOX, **loopback, **env)
    assert not list(scratch.glob("hpsearch-rank*")), "a follower rank left its scratch run directory behind"
    return done


SEARCHES = {  # backend -> a random search of it (W&B's own: tests/test_wandb.py, offline, 1 and 2 workers)
    "optuna": ["backend=optuna", "backend.sampler=random"],
    "ray": ["backend=ray"],
    "sigopt": ["backend=sigopt", "backend.driver=lite"],
}


EVERY_BACKEND = [
    pytest.param(name, marks=requires("sigoptlite") if name == "sigopt" else ()) for name in [*SEARCHES, "wandb"]
]


def random_search(backend: str) -> tuple[list[str], dict[str, str]]:
    """A backend's random-search overrides, and the environment its client needs here."""
    if backend == "wandb":
        return ["backend=wandb", "backend.method=random"], {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return SEARCHES[backend], {}


def worker_lines(run_dir: Path) -> list[dict]:
    """``workers.jsonl``: one line per trial a worker process trained."""
    return [json.loads(line) for line in (run_dir / "workers.jsonl").read_text().splitlines()]


def assert_shared_search(run_dir: Path, n_trials: int) -> None:
    """Exactly n_trials finished trials, distinct numbers, complete results, trained in both processes."""
    table = read_trials(run_dir)
    finished = [row for row in table if row["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == n_trials
    assert len({row["number"] for row in table}) == len(table)
    assert (run_dir / "best.json").is_file() and (run_dir / "best_hyperparameters.yaml").is_file()
    lines = worker_lines(run_dir)
    assert len(lines) == len(table)  # every trial of the study was trained by a worker of this search
    assert len({line["pid"] for line in lines}) == 2, lines  # ... in both processes
    # ... each with its share of the cores: torch fixes its threads at import, before a worker's environment
    assert {line["torch_threads"] for line in lines} == {max(1, (os.cpu_count() or 1) // 2)}, lines
