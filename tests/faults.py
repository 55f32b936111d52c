"""Faults injected at the boto call, below every fleetrun layer.

`Faults`: crash injection, raise right after the N-th AWS call (the call itself succeeded) made
inside a chosen entry point, as if the Lambda died at that line. `fail_calls`: an AWS call
that fails the way AWS fails it (a throttle, a transaction conflict), before it reaches moto.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError


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
        self._original = BaseClient._make_api_call

    @property
    def _active(self) -> str | None:
        """The entry point the current thread is inside (handlers of concurrent shards each have theirs)."""
        active: str | None = getattr(self._local, "active", None)
        return active

    @_active.setter
    def _active(self, name: str | None) -> None:
        self._local.active = name

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


def fail_calls(monkeypatch: pytest.MonkeyPatch, operation: str, error: Callable[[str], Exception], *,
               times: int = 1, matching: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
    """Make the next `times` calls of `operation` (those whose parameters `matching` accepts)
    raise `error(operation)` instead of reaching the service. Returns the parameters of the
    calls that failed, so a test can check the fault fired.

    The error is raised above botocore's own retries, as when they are exhausted."""
    original = BaseClient._make_api_call
    failed: list[dict[str, Any]] = []
    lock = threading.Lock()

    def make_api_call(client: BaseClient, name: str, params: dict[str, Any]) -> Any:
        if name == operation and (matching is None or matching(params)):
            with lock:
                fire = len(failed) < times
                if fire:
                    failed.append(params)
            if fire:
                raise error(name)
        return original(client, name, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    return failed


def aws_error(code: str, message: str = "injected", **extra: Any) -> Callable[[str], ClientError]:
    """The ClientError AWS answers with `code` (and `extra` fields of the error response)."""
    return lambda operation: ClientError({"Error": {"Code": code, "Message": message}, **extra}, operation)


def throttled(operation: str) -> ClientError:
    """DynamoDB refusing a request over the table's throughput."""
    return aws_error("ProvisionedThroughputExceededException", "The level of configured provisioned throughput "
                     "for the table was exceeded.")(operation)


def transaction_conflict(operation: str) -> ClientError:
    """DynamoDB cancelling a transaction because another one touched the same item at that moment."""
    return aws_error("TransactionCanceledException", "conflict", CancellationReasons=[
        {"Code": "TransactionConflict"}, {"Code": "None"}])(operation)
