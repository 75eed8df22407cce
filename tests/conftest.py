"""Shared fixtures: composed configs for in-process runs, the CLI in a fresh directory, and the stand-in servers."""

from __future__ import annotations

import os

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # before torch is imported, here and in the commands tests run
    # Tests run side by side: each gets its share of the cores, or torch's OpenMP threads oversubscribe and spin.
    os.environ.setdefault(
        "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    )

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig
from standins.sigopt_server import SigOptStandIn
from standins.wandb_server import WandbStandIn
from support import Served, compose_config, run_cli, wandb_env


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., DictConfig]:
    return lambda *overrides: compose_config(overrides, tmp_path)


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
    """A stand-in of W&B's API on 127.0.0.1; ``support.wandb_env(server)`` points the real client at it."""
    with WandbStandIn() as server:
        yield server


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Served:
    """The backend a test is parametrized with (``indirect=True``), with the stand-in server its client talks to."""
    if request.param == "sigopt":
        return Served("sigopt", ["backend=sigopt"], server=request.getfixturevalue("sigopt_server"))
    if request.param == "wandb":
        server = request.getfixturevalue("wandb_server")
        return Served("wandb", ["backend=wandb", "backend.method=random"], wandb_env(server), server)
    if request.param == "ray":
        return Served("ray", ["backend=ray"])
    return Served("optuna", ["backend=optuna"])


@pytest.hookimpl(tryfirst=True)  # before -m deselects: a solo test outside the slow suite would run beside others
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if loose := [
        item.nodeid for item in items if item.get_closest_marker("solo") and not item.get_closest_marker("slow")
    ]:
        raise pytest.UsageError(f"marked solo but not slow, so the default suite would run them in parallel: {loose}")
