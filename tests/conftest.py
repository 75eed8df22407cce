"""Shared fixtures: Hydra compose for in-process runs, and a subprocess CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from hpsearch.config import config_dir
from standins.sigopt_server import SigOptStandIn
from standins.wandb_server import WandbStandIn

TESTS_DIR = Path(__file__).resolve().parent


def compose_config(overrides: Sequence[str], workdir: Path) -> DictConfig:
    """The config ``python -m hpsearch`` would build, with run and storage dirs inside ``workdir``."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[f"run_dir={workdir / 'run'}", f"storage_dir={workdir / 'studies'}", "progress=false", *overrides],
        )


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    return lambda *overrides: compose_config(overrides, tmp_path)


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
    env.pop("HYDRA_FULL_ERROR", None)
    return {**env, **extra}


def run_cli(args: Sequence[str], cwd: Path, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m hpsearch ARGS`` in ``cwd``, with tests/ importable for helper model_init targets."""
    return subprocess.run(
        [sys.executable, "-m", "hpsearch", f"hydra.run.dir={cwd / 'run'}", *args],
        cwd=cwd,
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    return lambda *args, **kwargs: run_cli(args, tmp_path, **kwargs)


@pytest.fixture
def sigopt_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SigOptStandIn]:
    """A stand-in SigOpt API on 127.0.0.1, with the environment pointing the real client at it."""
    with SigOptStandIn() as server:
        monkeypatch.setenv("SIGOPT_API_URL", server.url)
        monkeypatch.setenv("SIGOPT_API_TOKEN", server.token)
        yield server


@pytest.fixture
def wandb_server() -> Iterator[WandbStandIn]:
    with WandbStandIn() as server:
        yield server


def wandb_env(server: WandbStandIn) -> dict[str, str]:
    """Point the real wandb client at the stand-in; runs are written offline."""
    return {"WANDB_BASE_URL": server.url, "WANDB_API_KEY": server.api_key, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
