"""What a tracker is: a trial-loop listener that logs every trial somewhere, and is told the result at the end."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from hpsearch.objective import Objectives
from hpsearch.trials import SearchResult, TrialOutcome


class Tracker(ABC):
    """``tracking=<name>`` (``conf/tracking/<name>.yaml``): logs each trial of any backend as it ends."""

    name: ClassVar[str]

    @abstractmethod
    def __init__(
        self, settings: Mapping[str, Any], study_name: str, backend: str, objectives: Objectives, run_dir: Path
    ) -> None:
        """Import the tracker's package here, so that a missing one is a one-line error before any training."""

    @abstractmethod
    def __call__(self, outcome: TrialOutcome) -> None:
        """Log one finished trial."""

    def finish(self, result: SearchResult) -> None:  # noqa: B027 - optional hook
        """After the results files are written: e.g. mark the best trials."""
