"""Powertools' batch utility (partial batch responses for SQS), loaded by the first batch.

`aws_lambda_powertools.utilities.batch` imports asyncio and every event data class: ~100 ms of
a cold start that only the queue workers need. `app.py` builds its processors at import with
these stand-ins; the real `BatchProcessor` of each is built when its first batch arrives and kept
for the life of the function, like a module-level processor.
"""

from __future__ import annotations

import threading
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from aws_lambda_powertools.utilities.batch import BatchProcessor as RealBatchProcessor


class EventType(Enum):
    """The event types of `aws_lambda_powertools.utilities.batch.EventType` (by name)."""

    SQS = "SQS"
    KinesisDataStreams = "KinesisDataStreams"
    DynamoDBStreams = "DynamoDBStreams"


class BatchProcessor:
    """Stands for `aws_lambda_powertools.utilities.batch.BatchProcessor(event_type, ...)`."""

    def __init__(self, event_type: EventType, raise_on_entire_batch_failure: bool = True) -> None:
        self.event_type = event_type
        self.raise_on_entire_batch_failure = raise_on_entire_batch_failure
        self._real: RealBatchProcessor | None = None
        self._lock = threading.Lock()

    @property
    def real(self) -> RealBatchProcessor:
        with self._lock:
            if self._real is None:
                from aws_lambda_powertools.utilities.batch import BatchProcessor as Real
                from aws_lambda_powertools.utilities.batch import EventType as RealEventType

                self._real = Real(event_type=RealEventType[self.event_type.name],
                                  raise_on_entire_batch_failure=self.raise_on_entire_batch_failure)
            return self._real


def process_partial_response(event: dict[str, Any], record_handler: Callable[[Any], Any],
                             processor: BatchProcessor, context: Any) -> Any:
    """`aws_lambda_powertools.utilities.batch.process_partial_response` with `processor`'s real one."""
    from aws_lambda_powertools.utilities.batch import process_partial_response as real

    return real(event=event, record_handler=record_handler, processor=processor.real, context=context)
