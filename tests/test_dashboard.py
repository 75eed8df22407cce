"""An hpsearch study opened in optuna-dashboard, through the dashboard's own server and API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from support import cli_env


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_optuna_dashboard_lists_the_trials_and_their_metrics(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    executable = shutil.which("optuna-dashboard")
    if executable is None:
        pytest.skip("optuna-dashboard is not installed (pip install 'hpsearch[dashboard]')")
    done = cli("experiment=ci", "n_trials=2", "study_name=dash")
    assert done.returncode == 0, done.stderr[-3000:]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The README's command: the study's journal file, served on loopback.
    server = subprocess.Popen(
        [executable, str(tmp_path / ".hpsearch" / "dash.log"), "--host", "127.0.0.1", "--port", str(port)],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except OSError:
                assert time.monotonic() < deadline, "optuna-dashboard did not start"
                time.sleep(0.5)
        (study,) = [s for s in studies if s["study_name"] == "dash"]
        detail = _get(f"{base}/api/studies/{study['study_id']}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    trials = detail["trials"]
    assert [t["state"] for t in trials] == ["Complete", "Complete"]
    for trial in trials:
        attrs = {attr["key"]: attr["value"] for attr in trial["user_attrs"]}
        assert {"eval_accuracy", "eval_loss", "eval_f1"} <= set(attrs)  # one attribute per metric, shown as columns
        assert float(attrs["eval_accuracy"]) == trial["values"][0]
    assert detail["objective_names"] == ["eval_accuracy"]  # hpsearch names the study's objectives
