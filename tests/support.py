"""What many tests share: running the CLI, composing configs, reading results back, and skip conditions.

Not a test module and not a fixture file: tests import from here, never from each other or from conftest.
"""

from __future__ import annotations

import csv
import importlib.util
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
