"""Error hierarchy: every class also inherits the builtin a caller would expect."""

from __future__ import annotations


class HPSearchError(Exception):
    """Base class. Its message is one line that names the config key and the fix."""

    exit_code = 2


class ConfigError(HPSearchError, ValueError):
    """A config key holds a value hpsearch cannot use."""


class SearchSpaceError(ConfigError):
    """A search-space parameter is invalid."""


class DataError(ConfigError):
    """A dataset cannot be read, or a declared column is missing."""


class ObjectiveError(ConfigError):
    """An objective names a metric the evaluation never returns."""


class MissingPackageError(HPSearchError, ImportError):
    """An optional package is not installed."""

    def __init__(self, what: str, package: str, extra: str | None = None) -> None:
        hint = f"pip install 'hpsearch[{extra}]'" if extra else f"pip install '{package}'"
        super().__init__(f"{what} needs the package '{package}', which is not installed; fix: {hint}")


class BackendUnavailableError(HPSearchError, ConnectionError):
    """A backend's server cannot be reached."""

    exit_code = 1


class TrialFailed(HPSearchError, RuntimeError):
    """One trial failed (raised, or produced NaN); the search goes on."""

    exit_code = 1


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (the socket error behind a client library's wrapper)."""
    while (inner := error.__cause__ or error.__context__) is not None and inner is not error:
        error = inner
    return error
