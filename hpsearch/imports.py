"""Optional dependencies: imported on first use, or a one-line install hint (like optuna's ``try_import``)."""

from __future__ import annotations

import importlib
from types import ModuleType

from hpsearch.errors import MissingPackageError


def require(module: str, what: str, package: str | None = None, extra: str | None = None) -> ModuleType:
    """Import an optional dependency, or fail with a one-line install hint naming ``what`` needs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackageError(what, package or module, extra) from None
