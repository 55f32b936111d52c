"""What an executor of a service-executed run gets and gives back (see services/work.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Lease(Protocol):
    """The run's lease while an executor works: progress keeps it alive, events are recorded."""

    def progress(self, percent: int, step: str | None = None) -> None:
        """Report progress; extends the lease when due. Raises Stopped when the run must stop."""

    def event(self, type_: str, message: str, data: dict[str, Any] | None = None) -> None:
        """Record an event on the task now (never put a secret in it)."""


@dataclass(frozen=True)
class Outcome:
    status: str  #: "succeeded" or "failed"
    error_message: str | None = None
    output: str | None = None
    #: recorded with the completion, like an agent's last events
    events: list[dict[str, Any]] = field(default_factory=list)
