"""Error hierarchy and exit codes: every class also inherits the builtin a caller would expect.

Exit codes of ``python -m hpsearch`` (each error class carries its own):

====  ==============================================================================
code  meaning
====  ==============================================================================
0     the search finished
1     an unexpected error (a bug: Python's own code for an uncaught exception)
2     a config error: a key holds a value hpsearch cannot use, or a package is missing
3     a backend or storage is unavailable (a server or database cannot be reached)
4     too many failed trials (more than ``max_failures``)
5     a DDP rank was lost (a crash or hang on another rank; see ``training.ddp_timeout``)
6     the search ended short of ``n_trials`` finished trials: the backend had no more to suggest (a grid ran
      out), or the last trials still run in other processes; the results so far are written
130   interrupted (Ctrl-C or SIGTERM): the running trial is failed, the results written, the study saved
====  ==============================================================================
"""

from __future__ import annotations

from typing import Any

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_TOO_MANY_FAILURES = 4
EXIT_RANK_LOST = 5
EXIT_INCOMPLETE = 6
EXIT_INTERRUPTED = 130


class HPSearchError(Exception):
    """Base class. Its message is one line that names the config key and the fix."""

    exit_code = EXIT_CONFIG


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
    """A backend's server or the study's storage cannot be reached."""

    exit_code = EXIT_UNAVAILABLE


class SearchAborted(HPSearchError, RuntimeError):
    """More trials failed than ``max_failures`` allows."""

    exit_code = EXIT_TOO_MANY_FAILURES


class SearchIncomplete(HPSearchError, RuntimeError):
    """The search ended with fewer than ``n_trials`` finished trials, and no trial failed too often."""

    exit_code = EXIT_INCOMPLETE


class CollectiveTimeout(HPSearchError, TimeoutError):
    """A DDP rank did not reach a collective in time: another rank crashed or hangs."""

    exit_code = EXIT_RANK_LOST


class WorkerError(HPSearchError, RuntimeError):
    """A worker process of ``workers=N`` stopped on an hpsearch error of its own; the launcher ends with it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class TrialFailed(HPSearchError, RuntimeError):
    """One trial failed (raised, or produced NaN); the search goes on."""

    exit_code = 1


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line reports."""
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def qualified_name(function: Any) -> str:
    """``module.qualname`` of a callable, a ``functools.partial`` named by its function: for messages, and
    stable across processes (a partial's repr holds object addresses)."""
    function = getattr(function, "func", function)
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', type(function).__name__)}"


def root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (the socket error behind a client library's wrapper)."""
    while (inner := error.__cause__ or error.__context__) is not None and inner is not error:
        error = inner
    return error
