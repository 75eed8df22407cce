"""Hydra multirun jobs: study names from what they sweep, secrets kept out, bad overrides in one line."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from support import read_trials

from hpsearch.multirun import READABLE_CHARS, job_study_name, swept_keys

NAMES = [  # (the command's overrides, one job's overrides, the study name, or None for "any name other than smoke")
    (["seed=1,2"], ["seed=2"], "smoke-seed=2-"),
    (["seed=1,2", "n_trials=4"], ["seed=2", "n_trials=4"], "smoke-seed=2-"),  # raising n_trials resumes it
    (["seed=1,2", "n_trials=4,8"], ["seed=2", "n_trials=8"], "smoke-seed=2-"),
    (["progress=true,false", "storage_dir=a,b"], ["progress=false", "storage_dir=b"], "smoke"),
    (["seed=1"], ["seed=1"], "smoke"),  # nothing swept: the study of the single run
    (["+training.hub_token=A,B"], ["+training.hub_token=B"], "smoke"),  # secrets never name a study
    (
        ["storage=postgresql://u:hunter2@h/a,postgresql://u:hunter2@h/b"],
        ["storage=postgresql://u:hunter2@h/b"],
        "smoke",
    ),
    (["backend=optuna,ray"], ["backend=ray"], "smoke-backend=ray-"),
    (
        ["+data.notes=postgresql://u:hunter2@h/a,x"],
        ["+data.notes=postgresql://u:hunter2@h/a"],
        "smoke-data.notes=postgresql_",
    ),
    (["data.source=choice(a,b)"], ["data.source=" + "d/" * 200 + "train.csv"], "smoke-data.source=d_d_"),
]


@pytest.mark.parametrize(("command", "job", "expected"), NAMES)
def test_a_job_study_is_named_from_the_swept_keys_that_change_the_search(
    command: list[str], job: list[str], expected: str
) -> None:
    name = job_study_name("smoke", job, swept_keys(["-m", *command]))
    assert "hunter2" not in name and "=B" not in name
    assert len(name) <= len("smoke-") + READABLE_CHARS + len("-") + 8
    if expected == "smoke":
        assert name == "smoke"
    else:
        assert name.startswith(expected) and name[-9] == "-" and int(name[-8:], 16) >= 0


def test_two_jobs_differing_past_the_readable_part_get_two_studies() -> None:
    long = "x" * READABLE_CHARS
    names = {job_study_name("s", [f"data.source={long}{end}"], {"data.source"}) for end in ("a", "b")}
    assert len(names) == 2


def test_a_bad_override_in_a_multirun_is_one_line(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    done = cli("-m", "experiment=ci", "seed=1,2", "training.nope=3", f"hydra.sweep.dir={tmp_path / 'multi'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "hpsearch: error: Could not override 'training.nope'; To append to your config use +training.nope=3; "
        "Key 'nope' is not in struct"
    ]
    assert not (tmp_path / "multi").exists()


@pytest.mark.slow
def test_multirun_keeps_secrets_out_and_a_rerun_resumes_each_jobs_study(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    secret = "SECRET123"

    def multirun(n_trials: int, name: str) -> subprocess.CompletedProcess[str]:
        return cli(
            "-m",
            "experiment=ci",
            f"n_trials={n_trials}",
            f"+training.hub_token={secret}",
            "+data.notes=postgresql://bob:hunter2@db/x",
            "seed=1,2",
            f"hydra.sweep.dir={tmp_path / name}",
            timeout=300,
        )

    first = multirun(1, "first")
    assert first.returncode == 0, first.stderr[-3000:]
    second = multirun(2, "second")
    assert second.returncode == 0, second.stderr[-3000:]
    for job in ("0", "1"):
        assert [row["state"] for row in read_trials(tmp_path / "second" / job)] == ["COMPLETE"] * 2
        assert read_trials(tmp_path / "second" / job)[:1] == read_trials(tmp_path / "first" / job)
    studies = sorted(path.name for path in (tmp_path / ".hpsearch").iterdir())
    assert len(studies) == 2 and all(name.startswith("ci-seed=") for name in studies), studies
    for path in tmp_path.rglob("*"):
        assert secret not in path.name and "hunter2" not in path.name, path
        if path.is_file() and path.suffix in (".yaml", ".json", ".csv", ".log"):
            text = path.read_text()
            assert secret not in text and "hunter2" not in text, path
    for done in (first, second):
        assert secret not in done.stdout + done.stderr and "hunter2" not in done.stdout + done.stderr
