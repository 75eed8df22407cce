"""``workers=auto``: the decision from measured figures, each packed worker's memory cap, the retry of a trial that
ran out of memory packed, and real probes on this machine's cores."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import pytest
import torch
from support import Served, read_trials, worker_lines

from hpsearch import app
from hpsearch.errors import ConfigError, WorkerError
from hpsearch.packing import (
    SHARE_ENV,
    Capacity,
    Decision,
    DeviceShare,
    PackingSettings,
    decide,
    is_out_of_memory,
    next_count,
    share_environment,
)
from hpsearch.probe import ProbePool
from hpsearch.space import SearchSpace

GIB = 2**30
H100 = 80 * GIB

DECISIONS = [
    # (per worker GiB, free GiB, cores, gpu, trials left, measured samples/s by count) -> (workers, reason starts)
    ((2, 70, 32, True, 100, {1: 100, 2: 190, 4: 350, 8: 600, 16: 700, 31: 720}), (16, "31 add less than 5%")),
    ((2, 70, 16, True, 100, {1: 100, 2: 190, 4: 350, 8: 600, 16: 700}), (16, "cores allow 16")),
    ((2, 70, 16, True, 100, {1: 100, 2: 104}), (1, "2 add less than 5%")),
    ((30, 70, 16, True, 100, {1: 100, 2: 180}), (2, "memory allow 2")),
    ((50, 70, 16, True, 100, {1: 100}), (1, "memory allow 1")),
    ((0.5, 20, 2, False, 100, {1: 600, 2: 1200}), (2, "cores allow 2")),
    ((0.5, 20, 2, False, 100, {1: 600, 2: 610}), (1, "2 add less than 5%")),
    ((0.5, 20, 8, False, 3, {1: 600, 2: 1100, 3: 1500}), (3, "trials left allow 3")),
    ((0.5, 20, 8, False, 100, {1: 600, 2: 1100}), (2, "2 is the most measured")),
]


@pytest.mark.parametrize(("given", "expected"), DECISIONS)
def test_the_worker_count_follows_memory_cores_and_measured_throughput(given: tuple, expected: tuple) -> None:
    per_worker, free, cores, gpu, trials_left, throughputs = given
    capacity = Capacity(int(per_worker * GIB), int(free * GIB), H100 if gpu else int(free * GIB), cores, gpu)
    decision = decide(capacity, PackingSettings(), trials_left, throughputs)
    assert (decision.per_device, decision.reason[: len(expected[1])]) == expected
    if gpu:  # each worker's cap: its share of what is free, the margin kept
        assert decision.memory_fraction == pytest.approx(free * 0.9 / decision.per_device / 80)
    else:
        assert decision.memory_fraction is None


def test_the_decision_line_and_record_carry_the_figures() -> None:
    capacity = Capacity(int(2.5 * GIB), 70 * GIB, H100, 16, True)
    decision = decide(capacity, PackingSettings(), 100, {1: 100.0, 2: 104.0})
    line = decision.line(capacity, 8)
    assert line.startswith("workers=auto: 1 per GPU x 8 GPUs (one trial needs 2.50 GiB")
    assert "70.0 GiB of GPU free, 16 cores; measured 100.0 samples/s with 1, 104.0 samples/s with 2" in line
    record = decision.record(capacity, 8)
    assert (record["workers_per_device"], record["devices"], record["samples_per_s"]) == (
        1,
        8,
        {"1": 100.0, "2": 104.0},
    )


def test_a_trial_that_fits_nowhere_is_a_config_error_naming_the_fix() -> None:
    capacity = Capacity(90 * GIB, 70 * GIB, H100, 16, True)
    with pytest.raises(ConfigError, match=r"workers=auto: one trial .* needs 90\.00 GiB.*lower the space's largest"):
        decide(capacity, PackingSettings(), 10, {1: 1.0})


PROBE_ORDER = [
    # (bound, measured so far) -> the next count to measure
    ((16, {1: 100}), 2),
    ((16, {1: 100, 2: 190}), 4),
    ((16, {1: 100, 2: 190, 4: 350, 8: 600}), 16),
    ((12, {1: 100, 2: 190, 4: 350, 8: 600}), 12),
    ((16, {1: 100, 2: 101}), None),  # the last count gained too little
    ((2, {1: 100, 2: 190}), None),  # the bound is measured
    ((1, {1: 100}), None),
]


@pytest.mark.parametrize(("given", "expected"), PROBE_ORDER)
def test_probes_double_the_count_until_the_gain_stops_or_the_bound(given: tuple, expected: int | None) -> None:
    bound, throughputs = given
    assert next_count(bound, throughputs, 0.05) == expected


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"margin": 1.0}, "packing.margin: must be a number in [0, 1)"),
        ({"probe_steps": 0}, "packing.probe_steps: must be an integer >= 1"),
        ({"max_workers": "many"}, "packing.max_workers: must be an integer >= 1, or null"),
        ({"marign": 0.2}, "packing.marign: unknown key"),
    ],
)
def test_bad_packing_settings_are_config_errors(config: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        PackingSettings.from_config(config)


def test_the_probe_point_is_the_most_demanding_one() -> None:
    space = SearchSpace.from_config(
        {
            "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
            "per_device_train_batch_size": {"type": "categorical", "choices": [16, 64, 32]},
            "lr_scheduler_type": {"type": "categorical", "choices": ["linear", "cosine"]},
            "r": {"type": "int", "low": 4, "high": 32, "step": 4},
            "seed": {"type": "fixed", "value": 7},
        }
    )
    assert space.most_demanding() == {
        "learning_rate": 1e-3,
        "per_device_train_batch_size": 64,
        "lr_scheduler_type": "linear",
        "r": 32,
        "seed": 7,
    }


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", True),
        ("RuntimeError: DefaultCPUAllocator: can't allocate memory: you tried to allocate ... out of memory", True),
        ("MemoryError: ", True),
        ("ValueError: bad label", False),
        (None, False),
    ],
)
def test_out_of_memory_errors_are_told_apart(error: str | None, expected: bool) -> None:
    assert is_out_of_memory(error) is expected


def test_each_packed_gpu_worker_caps_its_memory_before_it_runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A device double: no GPU here, so torch.cuda's answers and the cap call are recorded."""
    calls: list[tuple[str, Any]] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, *a: calls.append(("cap", f)))
    monkeypatch.setattr(app, "run", lambda cfg, parts=None: calls.append(("run", None)))
    monkeypatch.setattr(app, "handle_interrupts", lambda: None)
    monkeypatch.setenv(SHARE_ENV, "")  # restored after the test: the worker's environment lands in os.environ
    app._start_worker({}, share_environment(tmp_path, Decision(4, "measured", 0.2, {1: 1.0})))
    assert calls == [("cap", 0.2), ("run", None)]


def test_an_unpacked_worker_has_no_share() -> None:
    assert share_environment(Path("/tmp"), Decision(1, "memory allow 1", 0.9, {1: 1.0})) == {}


def test_a_retry_alone_waits_for_the_running_neighbour_and_holds_off_new_trials(tmp_path: Path) -> None:
    share = DeviceShare(tmp_path, None)
    events: list[str] = []
    neighbour_running, release_neighbour = threading.Event(), threading.Event()

    def neighbour() -> None:
        with share.trial():
            neighbour_running.set()
            release_neighbour.wait(10)
            events.append("neighbour's trial ends")
        time.sleep(0.2)  # its next trial must wait for the retry
        with share.trial():
            events.append("neighbour's next trial")

    thread = threading.Thread(target=neighbour)
    thread.start()
    neighbour_running.wait(10)
    threading.Timer(0.3, release_neighbour.set).start()
    with share.alone():
        events.append("retry alone")
        time.sleep(0.4)
        events.append("retry ends")
    thread.join(10)
    assert events == ["neighbour's trial ends", "retry alone", "retry ends", "neighbour's next trial"]


def test_probes_start_once_share_the_cores_and_the_kept_ones_become_workers(tmp_path: Path) -> None:
    pool = ProbePool(helpers.counting_probe, {"folder": str(tmp_path)}, {"OMP_NUM_THREADS": "2"}, cores=2)
    try:
        alone, pair = pool.measure(1), pool.measure(2)
        (kept,) = pool.hand_over(1)
        assert not pool.members[1].process.is_alive()  # let go before the search: what it held is free
        worker = kept.adopt({"folder": str(tmp_path)}, {"HPSEARCH_WORKER": "0", "OMP_NUM_THREADS": "2"})
        worker.join(60)
    finally:
        pool.close()
    starts = (tmp_path / "starts").read_text().split()
    assert len(starts) == 2  # one process for the first round, one more for the second: none started twice
    assert [result.samples_per_s for result in alone] == [2.0]  # alone: every core
    assert [result.samples_per_s for result in pair] == [1.0, 1.0]  # two at once: a core each
    assert (tmp_path / f"worker-{starts[0]}").read_text() == f"{tmp_path} 0"  # the first probe went on as worker 0
    assert not (tmp_path / f"worker-{starts[1]}").exists()  # the other was let go
    assert worker.exitcode == 0 and all(not member.process.is_alive() for member in pool.members)


def test_a_probe_that_dies_ends_the_search_with_one_line(tmp_path: Path) -> None:
    pool = ProbePool(helpers.dying_probe, {}, {}, cores=2)
    try:
        with pytest.raises(WorkerError, match=r"^workers=auto: a probe process died \(exit code 9\)$"):
            pool.measure(1)
    finally:
        pool.close()


@pytest.mark.slow
@pytest.mark.solo
# The two ways a decision is carried out: a worker pool (optuna here; SigOpt and W&B run the same pool) and
# Ray's concurrent trials. The other two backends' pools cost CI minutes and test nothing more.
@pytest.mark.parametrize("served", ["optuna", "ray"], indirect=True)
def test_workers_auto_picks_a_count_from_real_probes_on_a_pool_and_on_ray(
    served: Served, cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    # 3 epochs: trials of a few seconds, so a worker that starts a little later still gets one of the 4
    done = cli(
        "experiment=ci",
        "workers=auto",
        "n_trials=4",
        "training.num_train_epochs=3",
        *served.overrides,
        timeout=400,
        **served.env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if "workers=auto:" in line]
    assert "GiB at the space's most demanding point" in line and "samples/s with 1" in line, line
    decided = re.search(r"workers=auto: (\d) on CPU \(", line)
    assert decided is not None and 1 <= int(decided.group(1)) <= (os.cpu_count() or 1), line
    table = read_trials(tmp_path / "run")
    assert [row["state"] for row in table] == ["COMPLETE"] * 4
    kept = json.loads((tmp_path / "run" / "packing.json").read_text())  # the figures, beside the results
    assert kept["workers_per_device"] == int(decided.group(1)) and kept["device"] == "cpu"
    assert kept["per_worker_bytes"] > 0 and "1" in kept["samples_per_s"]
    if served.backend != "ray":  # the pool trained with as many worker processes as decided
        pids = {line["pid"] for line in worker_lines(tmp_path / "run")}
        assert len(pids) <= int(decided.group(1)), line
        assert int(decided.group(1)) == 1 or len(pids) == 2, (line, pids)


@pytest.mark.slow
@pytest.mark.solo
def test_an_out_of_memory_trial_in_a_packed_worker_is_retried_alone_once(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli(
        "experiment=ci",
        "workers=auto",
        "packing.min_gain=-1",  # any throughput counts as a gain: the cores (2) decide, so the workers are packed
        "n_trials=4",
        "max_failures=0",
        "model.model_init._target_=helpers.packed_oom_tiny_bert",
        "~model.model_init.hidden_size",
        "~model.model_init.num_hidden_layers",
        "~model.model_init.num_attention_heads",
        "~model.model_init.intermediate_size",
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "workers=auto: 2 on CPU" in done.stderr
    table = read_trials(tmp_path / "run")
    assert [row["state"] for row in table] == ["COMPLETE"] * 4  # no trial lost, none failed
    retried = [row for row in table if row["retried_out_of_memory"] == "1.0"]
    pids = {line["pid"] for line in worker_lines(tmp_path / "run")}
    assert len(retried) == len(pids) >= 1  # each worker's first trial, trained again alone
