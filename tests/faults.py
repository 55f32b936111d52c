"""Crash injection: raise right after the N-th AWS call (the call itself succeeded) made
inside a chosen entry point, as if the Lambda died at that line."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from botocore.client import BaseClient


class InjectedCrash(RuntimeError):
    pass


class Faults:
    def __init__(self) -> None:
        self.target: str | None = None
        self.after_call: int | None = None
        self.calls = 0
        self.fired: list[str] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._active: str | None = None
        self._original = BaseClient._make_api_call

    def install(self) -> None:
        faults = self
        original = self._original

        def _make_api_call(client: BaseClient, operation: str, params: dict[str, Any]) -> Any:
            result = original(client, operation, params)
            faults._after(operation)
            return result

        BaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]

    def uninstall(self) -> None:
        BaseClient._make_api_call = self._original  # type: ignore[method-assign]

    def arm(self, target: str, after_call: int) -> None:
        with self._lock:
            self.target, self.after_call, self.calls = target, after_call, 0

    @property
    def armed(self) -> bool:
        return self.after_call is not None

    def _after(self, operation: str) -> None:
        with self._lock:
            if self.after_call is None or self._active != self.target:
                return
            self.calls += 1
            if self.calls < self.after_call:
                return
            self.after_call = None
            self.fired.append(f"{self.target}:{operation}")
        raise InjectedCrash(f"crash injected after {operation} in {self.target}")

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[None]:
        previous, self._active = self._active, name
        try:
            yield
        finally:
            self._active = previous

    def wrap(self, name: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with self.inside(name):
                return handler(*args, **kwargs)

        return wrapped
