"""``python -m hpsearch [overrides]``: a thin Hydra entry point around ``hpsearch.app.run``."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import hydra
from omegaconf import DictConfig

from hpsearch.config import (
    check_composes,
    check_group_choices,
    config_dir,
    redact_hydra_dir,
    redact_logs,
    redact_text,
)
from hpsearch.errors import EXIT_CONFIG, EXIT_INTERRUPTED, HPSearchError
from hpsearch.interrupt import handle_interrupts


def _fail(message: str, code: int) -> None:
    print(f"hpsearch: error: {message}", file=sys.stderr)
    sys.exit(code)


def _task(cfg: DictConfig) -> None:
    cfg.study_name = multirun_study_name(cfg)
    if sys.stderr.isatty() and not _is_follower() and not cfg.get("results_only"):  # before the slow imports
        print(
            f"hpsearch: study_name={cfg.study_name}: loading libraries, model and data ...", file=sys.stderr, flush=True
        )
    from hpsearch.app import run

    # Hydra has parsed the command line; libraries that record it (W&B's run metadata) see it masked.
    sys.argv[:] = [redact_text(arg) for arg in sys.argv]
    if _is_follower():
        shutil.rmtree(cfg.run_dir, ignore_errors=True)  # Hydra's scratch run directory: nothing goes there
    redact_hydra_dir(Path(cfg.run_dir) / ".hydra")
    handle_interrupts()
    try:
        run(cfg)
    except HPSearchError as error:
        if error.exit_code == EXIT_CONFIG:
            _remove_unstarted(Path(cfg.run_dir))
        _fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; the study is saved, rerun the same command to resume it", EXIT_INTERRUPTED)


def _remove_unstarted(run_dir: Path) -> None:
    """A run that never started leaves nothing: Hydra's ``.hydra/``, its log and empty folders go; anything else
    in the folder (a user's own files) stays."""
    from hpsearch.results import TRIALS_CSV

    if not run_dir.is_dir() or (run_dir / TRIALS_CSV).exists():
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for path in run_dir.glob("*.log"):
        path.unlink()
    for folder in sorted((p for p in run_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(folder.iterdir()):
            folder.rmdir()
    here = Path.cwd().resolve()
    for folder in (run_dir, *run_dir.resolve().parents):  # outputs/<study>/<time>, outputs/<study>, outputs
        if folder.resolve() == here or here not in folder.resolve().parents or any(folder.iterdir()):
            break
        folder.rmdir()


def multirun_study_name(cfg: DictConfig) -> str:
    """In a multirun each job searches its own study, named from what it sweeps (``smoke-seed=2-1f3a9c04``),
    unless ``study_name=`` is given: a shared study on purpose, as for an array of workers."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from hpsearch.multirun import job_study_name, swept_keys

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or any(
        o.lstrip("+").startswith("study_name=") for o in hydra_cfg.overrides.task
    ):
        return str(cfg.study_name)
    redact_hydra_dir(Path(hydra_cfg.sweep.dir))  # multirun.yaml holds every override typed
    swept = swept_keys(sys.argv[1:]) | set(hydra_cfg.sweeper.get("params") or {})
    return job_study_name(str(cfg.study_name), hydra_cfg.overrides.task, swept)


def _is_follower() -> bool:
    return int(os.environ.get("RANK", "0")) != 0


def _follower_overrides() -> list[str]:
    """Under torchrun only rank zero writes a run directory and logs; the others write nothing."""
    if not _is_follower():
        return []
    scratch = tempfile.mkdtemp(prefix=f"hpsearch-rank{os.environ['RANK']}-")
    return [
        f"hydra.run.dir={scratch}",
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]


def main() -> None:
    if sys.argv[1:2] == ["--version"]:  # Hydra's own flag would print Hydra's version
        from hpsearch import __version__

        print(f"hpsearch {__version__}")
        return
    if sys.argv[1:2] == ["compare"]:  # hpsearch compare ...: the console script's one subcommand
        from hpsearch.compare.cli import main as compare

        compare(sys.argv[2:])
        return
    sys.argv += _follower_overrides()
    redact_logs()
    try:
        check_group_choices(sys.argv[1:])
        check_composes(sys.argv[1:])
    except HPSearchError as error:
        _fail(str(error), error.exit_code)
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(_task)()


if __name__ == "__main__":
    main()
