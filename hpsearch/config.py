"""Where the Hydra configs live, early checks of group choices, and secret-free config dumps."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from hpsearch.errors import ConfigError
from hpsearch.settings import unknown_key

_PACKAGE_DIR = Path(__file__).resolve().parent
# A secret's name ends with one of these words (``hub_token``, ``wandb_api_key``, ``password``); a name that
# merely contains one (``tokenizer``, ``average_tokens_across_devices``) is not a secret.
_SECRET_WORD = r"(?:api[_-]?key|token|secret|password|passwd)"
SECRET_KEY = re.compile(rf"(?:^|[_.-]){_SECRET_WORD}$", re.IGNORECASE)
SECRET_ASSIGNMENT = re.compile(rf"((?<![\w.-])(?:[\w.-]*[_.-])?{_SECRET_WORD}=)\S+", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")
SECRET_ENV = ("WANDB_API_KEY", "SIGOPT_API_TOKEN", "SIGOPT_TOKEN")
REDACTED = "***"
_NOISE = ("full_key:", "object_type=", "reference_type=")


def config_dir() -> Path:
    """``hpsearch/conf`` inside an installed wheel, else the checkout's top-level ``conf/``."""
    installed = _PACKAGE_DIR / "conf"
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / "conf"


def group_options(group: str) -> list[str]:
    folder = config_dir() / group
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder.is_dir() else []


def check_group_choices(overrides: Sequence[str]) -> None:
    """Name the key and the valid options for a mistyped ``group=option`` before Hydra composes; each value of
    a multirun sweep (``backend=optuna,ray``, ``choice(...)``, ``range(...)``) is checked alike."""
    for override in overrides:
        key, values = _group_values(override)
        if key is None or key.startswith("hydra/"):  # Hydra's own groups have plugin options too (submitit_local)
            continue
        options = group_options(key)
        for value in values:
            if value not in options:
                raise ConfigError(f"{key}: unknown {key} {value!r}; choose one of {options}")


def _group_values(override: str) -> tuple[str | None, list[str]]:
    """(group, the option names it selects) for a ``group=option`` override; (None, []) for anything else."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_override(override)
    except HydraException:
        return None, []  # composing reports it
    if parsed.is_delete() or not (config_dir() / parsed.key_or_group).is_dir():
        return None, []
    if parsed.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP, ValueType.RANGE_SWEEP):
        return parsed.key_or_group, list(parsed.sweep_string_iterator())
    value = parsed.value()
    return (parsed.key_or_group, [value]) if isinstance(value, str) and value else (None, [])


MULTIRUN_FLAGS = ("-m", "--multirun")


def top_level_keys() -> list[str]:
    """The keys the primary config and its groups define; Hydra's own ``hydra`` is composed apart."""
    primary = yaml.safe_load((config_dir() / "config.yaml").read_text())
    groups = (path.name for path in config_dir().iterdir() if path.is_dir())
    return sorted({*primary, *groups} - {"defaults"})


def check_top_level_key(key: str, known: Sequence[str]) -> None:
    """A typo'd top-level key (``n_trial=3``, also as ``+n_trial=3``) would be ignored: name the nearest one."""
    top = re.split(r"[./]", key, maxsplit=1)[0]
    if top not in known and top != "hydra":
        raise ConfigError(f"{top}: not a config key; {unknown_key(top, list(known))}")


def check_composes(overrides: Sequence[str]) -> None:
    """Compose once up front, so a bad override is one line instead of Hydra's multi-line report. In a multirun
    each sweep is composed at its first value: a key that does not exist fails for every value alike."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    flags = {arg for arg in overrides if arg.startswith("-")}
    if flags - set(MULTIRUN_FLAGS):  # --help, --cfg, --info: leave them to Hydra
        return
    task_overrides = [
        _first_value(arg) for arg in overrides if arg not in flags and not arg.lstrip("+~").startswith("hydra")
    ]
    known = top_level_keys()
    for arg in task_overrides:
        if arg is not None:
            check_top_level_key(arg.lstrip("+~").split("=", 1)[0], known)
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            compose(config_name="config", overrides=[arg for arg in task_overrides if arg is not None])
    except (HydraException, OmegaConfBaseException) as error:
        lines = f"{error}\n{error.__cause__ or ''}".splitlines()
        kept = [line.strip().rstrip(".") for line in lines if line.strip() and not line.strip().startswith(_NOISE)]
        raise ConfigError("; ".join(kept)) from None


def _first_value(override: str) -> str | None:
    """A sweep override (``seed=1,2``, ``range(3)``, ``choice(a,b)``) as its first value; None for a sweep with
    no listed values (``glob(*)``); anything else as it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_override(override)
    except HydraException:
        return override  # composing reports it
    if not parsed.is_sweep_override():
        return override
    if parsed.value_type not in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP, ValueType.RANGE_SWEEP):
        return None
    first = next(iter(parsed.sweep_string_iterator()), None)
    return (
        None
        if first is None
        else f"{override[: len(override) - len(override.lstrip('+~'))]}{parsed.key_or_group}={first}"
    )


def plain(node: DictConfig) -> dict[str, Any]:
    """A config node as a resolved plain dict."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return {str(key): value for key, value in container.items()}


def _redact(node: Any, secrets: list[str]) -> Any:
    if isinstance(node, dict):
        return {
            key: REDACTED if SECRET_KEY.search(str(key)) and node[key] else _redact(node[key], secrets) for key in node
        }
    if isinstance(node, list):
        return [_redact(item, secrets) for item in node]
    if isinstance(node, str):
        return redact_text(node, secrets)
    return node


def _secret_env_values() -> list[str]:
    return [os.environ[name] for name in SECRET_ENV if os.environ.get(name)]


def redact_text(text: str, secrets: list[str] | None = None) -> str:
    """``text`` with secret env values, ``*token=...``-style assignments and URL passwords masked."""
    for secret in _secret_env_values() if secrets is None else secrets:
        text = text.replace(secret, REDACTED)
    text = SECRET_ASSIGNMENT.sub(rf"\g<1>{REDACTED}", text)
    return URL_PASSWORD.sub(rf"\g<1>{REDACTED}@", text)


def redact_logs() -> None:
    """Mask secrets in every log record of this process: Hydra logs each multirun job's overrides as typed."""
    make_record = logging.getLogRecordFactory()

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return record

    logging.setLogRecordFactory(masked_record)


def redacted(config: Any) -> Any:
    """A resolved plain copy with secret-named keys, secret env values and URL passwords masked."""
    plain = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    return _redact(plain, _secret_env_values())


def save_resolved(config: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(redacted(config), sort_keys=False))


def redact_hydra_dir(folder: Path) -> None:
    """Hydra saves the config and CLI overrides before the task runs; mask any secret typed there."""
    for path in folder.glob("*.yaml"):
        path.write_text(yaml.safe_dump(redacted(yaml.safe_load(path.read_text()) or {}), sort_keys=False))
