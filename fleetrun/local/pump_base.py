"""What the event pumps share: the fake Lambda context, the batch-failure rules, the poll loops.

Use it through `fleetrun.local.pumps`.

A handler runs under its function's Lambda timeout, as on Lambda: `_invoke` runs it on the pump's
worker thread and stops waiting at `timeout_seconds`; the batch then counts as failed (retried,
dead-lettered after its receives) and the worker is abandoned to finish on its own, like a frozen
Lambda sandbox (its late writes still land, as a timed-out Lambda's do). The worker thread is
reused from one invocation to the next: a new one is started only after a timeout.
"""

from __future__ import annotations

import abc
import contextvars
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger("fleetrun.local.pumps")

Record = dict[str, Any]
Handler = Callable[[dict[str, Any], Any], Any]


class LambdaContext:
    """The Lambda context object the Python runtime passes to handlers (Powertools accepts it)."""

    def __init__(
        self,
        function_name: str = "fleetrun-local",
        *,
        timeout_seconds: float = 60.0,
        memory_limit_in_mb: int = 512,
        region: str = "us-east-1",
        account_id: str = "123456789012",
    ) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def failed_item_ids(response: Any, batch_ids: Sequence[str]) -> set[str] | None:
    """Identifiers a handler response reports as failed; None when Lambda would fail the whole batch."""
    if not isinstance(response, Mapping) or response.get("batchItemFailures") is None:
        return set()
    failures = response["batchItemFailures"]
    if not isinstance(failures, list):
        return None
    failed: set[str] = set()
    for failure in failures:
        item_id = failure.get("itemIdentifier") if isinstance(failure, Mapping) else None
        if not item_id or item_id not in batch_ids:
            return None
        failed.add(item_id)
    return failed


class _Call:
    """One handler invocation handed to a worker thread."""

    def __init__(self, run: Callable[..., Any], *args: Any) -> None:
        self.run, self.args = run, args
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def result(self, timeout: float) -> Any:
        if not self.done.wait(timeout):
            raise TimeoutError
        if self.error is not None:
            raise self.error
        return self.value


class _Worker:
    """A daemon thread running a pump's invocations one by one (an abandoned one never keeps the
    process alive)."""

    def __init__(self, name: str) -> None:
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name=f"{name}-lambda", daemon=True).start()

    def _loop(self) -> None:
        while (call := self.calls.get()) is not None:
            try:
                call.value = call.run(*call.args)
            except BaseException as error:  # handed to the invoker, raised there
                call.error = error
            finally:
                call.done.set()


class Pump(abc.ABC):
    """Base of the pumps: `poll_once` delivers one round; `drain` and `run_forever` loop over it."""

    handler: Handler
    function_name: str
    timeout_seconds: float
    region: str

    @abc.abstractmethod
    def poll_once(self) -> int:
        """Deliver one round of records; return how many were delivered."""

    def _invoke(self, records: list[Record]) -> tuple[bool, Any]:
        """Call the handler with one batch: (False, None) when it raised or timed out."""
        context = LambdaContext(self.function_name, timeout_seconds=self.timeout_seconds, region=self.region)
        worker = self.__dict__.get("_worker")
        if worker is None:
            worker = self.__dict__["_worker"] = _Worker(self.function_name)
        call = _Call(contextvars.copy_context().run, self.handler, {"Records": records}, context)
        worker.calls.put(call)
        try:
            return True, call.result(self.timeout_seconds)
        except TimeoutError:
            logger.error("%s: timed out after %g s", self.function_name, self.timeout_seconds)
            del self.__dict__["_worker"]
            worker.calls.put(None)  # abandoned: it stops once the handler returns
            return False, None
        except Exception:
            logger.exception("%s failed on a batch of %d record(s)", self.function_name, len(records))
            return False, None

    def drain(self, max_rounds: int = 100) -> int:
        """Poll until a round delivers nothing; the number of records delivered (redeliveries count)."""
        total = 0
        for _ in range(max_rounds):
            delivered = self.poll_once()
            if not delivered:
                break
            total += delivered
        return total

    def run_forever(self, stop: threading.Event, interval: float = 1.0, wake: threading.Event | None = None) -> None:
        """Poll until `stop` is set, pausing `interval` seconds whenever a round delivers nothing;
        a pause ends early when `wake` is set (something was written that this pump delivers).
        Whoever sets `stop` sets `wake` too."""
        while not stop.is_set():
            if wake is not None:
                wake.clear()  # before polling: a write during the poll keeps it set for the next one
            try:
                delivered = self.poll_once()
            except Exception:
                logger.exception("%s: polling failed", self.function_name)
                delivered = 0
            if not delivered:
                (wake or stop).wait(interval)
