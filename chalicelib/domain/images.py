"""The image catalog's unit: one tag of an artifact in Harbor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tagged:
    """One tag of an artifact, as the image catalog keeps it (read from Harbor by
    `executors/harbor.py`, written by `store/images.py`)."""

    repository: str  #: full name, `project/repo`
    tag: str
    digest: str
    size_bytes: int
    pushed_at: str | None
