"""Events the service writes itself (`task.created`, `task.retried`, ...), in the shape of
an agent's events."""

from __future__ import annotations

from typing import Any

from chalicelib import clock


def service_event(name: str, message: str, *, type_: str = "info", data: dict[str, Any] | None = None,
                  node: str | None = None, at: str | None = None) -> dict[str, Any]:
    """An event the service writes itself (`task.created`, `task.retried`, ...)."""
    return {
        "at": at or clock.now_iso(),
        "type": type_,
        "name": name,
        "step": None,
        "node": node,
        "message": f"{name}: {message}",
        "progress": None,
        "data": data or {},
    }
