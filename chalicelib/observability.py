"""Powertools logger, metrics and tracer, wired for Chalice handlers.

Every log line goes through `ScrubbingFormatter`, which removes bearer tokens, JWTs and
node tokens from every string field before the line is serialized (invariant 6).

Keys of one invocation (`bind`: user, task_id, node, the Lambda context) live in Powertools'
context-local keys, never in the logger's shared ones (`Logger.append_keys`): those persist
across invocations of a warm function, and the local runtime serves requests on concurrent
threads of one process, where a shared key of one request shows up on another's lines. The
middleware clears them when an invocation starts and ends, and `per_record` around each record
of a batch.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.logging.types import LogRecord
from aws_lambda_powertools.metrics import MetricUnit, single_metric

if TYPE_CHECKING:  # services import `logger` from here; only app.py needs Chalice
    from chalice.app import Chalice

SERVICE: Final = "fleetrun"
NAMESPACE: Final = "Fleetrun"
SCRUBBED: Final = "***"
_Record = TypeVar("_Record")

_TOKENS: Final = (
    (re.compile(r"(?i)\bbearer\s+\S+"), f"Bearer {SCRUBBED}"),
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*"), SCRUBBED),
    (re.compile(r"\bfrn\.[\w-]+\.[\w-]+"), SCRUBBED),
)


def scrub(text: str) -> str:
    """`text` with anything that looks like a credential replaced."""
    for pattern, replacement in _TOKENS:
        text = pattern.sub(replacement, text)
    return text


class ScrubbingFormatter(LambdaPowertoolsFormatter):
    """Scrubs the structured record, not the JSON text: a regex over JSON could eat a quote."""

    def __init__(self, **options: Any) -> None:
        # objects that are not JSON are logged as str(obj): scrub that text too
        super().__init__(json_default=lambda obj: scrub(str(obj)), **options)

    def serialize(self, log: LogRecord) -> str:
        scrubbed: LogRecord = _scrub_deep(log)
        return super().serialize(log=scrubbed)


class _CurrentStdout:
    """Writes to whatever `sys.stdout` is now (Powertools binds the stream at construction,
    which would hide log lines from pytest's capsys and from any later redirection)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


logger = Logger(service=SERVICE, stream=cast(IO[str], _CurrentStdout()), logger_formatter=ScrubbingFormatter())
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
#: what the tracer patches: the AWS SDK (boto clients and PynamoDB's connection) and http.client
#: (webhooks through urllib3). Powertools' default patches every library X-Ray knows (requests,
#: sqlite3, psycopg2, httpx, ...), importing each one present: ~50 ms of every cold start for
#: libraries the app never calls (bench/coldstart.py)
TRACED_MODULES: Final = ("botocore", "pynamodb", "httplib")
# disabled outside Lambda and by POWERTOOLS_TRACE_DISABLED
tracer = Tracer(service=SERVICE, patch_modules=TRACED_MODULES)

# Logger(service=...) reuses the handler of an earlier Logger with the same service and
# ignores `logger_formatter`; make sure the scrubber is the formatter in every import order.
if not isinstance(logger.registered_formatter, ScrubbingFormatter):
    _keys = dict(logger.get_current_keys())
    logger.registered_handler.setFormatter(ScrubbingFormatter())
    logger.append_keys(**_keys)

_cold_start = True


def bind(**keys: Any) -> None:
    """Add keys (task_id, node, run_id…) to every following log line of this invocation (this
    thread or context only); None values are skipped."""
    present = {name: value for name, value in keys.items() if value is not None}
    logger.thread_safe_append_keys(**present)


def unbind() -> None:
    """Remove every key added with `bind` in this thread or context."""
    logger.thread_safe_clear_keys()


@contextmanager
def scoped_keys() -> Iterator[None]:
    """Keys bound inside are gone on the way out; those bound before are kept."""
    before = dict(logger.thread_safe_get_current_keys())
    try:
        yield
    finally:
        logger.thread_safe_clear_keys()
        logger.thread_safe_append_keys(**before)


def per_record(handle: Callable[[_Record], None]) -> Callable[[_Record], None]:
    """`handle` for one record of a batch, whose keys (its task_id…) end with it: the next record
    of the batch does not log under them."""

    @functools.wraps(handle)
    def handle_one(record: _Record) -> None:
        with scoped_keys():
            handle(record)

    return handle_one


def count(metric: str, value: float = 1, **dimensions: str) -> None:
    """Count `metric`; with dimensions it is published at once as its own EMF blob."""
    if not dimensions:
        metrics.add_metric(name=metric, unit=MetricUnit.Count, value=value)
        return
    with single_metric(name=metric, unit=MetricUnit.Count, value=value, namespace=NAMESPACE) as single:
        single.add_dimension(name="service", value=SERVICE)
        for name, dimension in dimensions.items():
            single.add_dimension(name=name, value=dimension)


def flush_metrics() -> None:
    """Print the buffered metrics as one EMF blob (nothing, and no warning, when empty)."""
    if metrics.metric_set:
        metrics.flush_metrics(raise_on_empty_metrics=False)


def chalice_middleware(app: Chalice) -> None:
    """Register on `app` a middleware for every event type: fresh log keys per invocation,
    the Lambda context in every log line, metrics flushed at the end."""

    @app.middleware("all")
    def observe(event: Any, get_response: Callable[[Any], Any]) -> Any:
        unbind()
        _inject_lambda_context(_lambda_context_of(app, event))
        try:
            return get_response(event)
        finally:
            flush_metrics()
            unbind()  # the thread's own lines after the invocation (a pump's) carry none of its keys


def _lambda_context_of(app: Chalice, event: Any) -> Any:
    from chalice.app import Request

    # HTTP middleware gets a Request (or None when API Gateway sent no resource path);
    # `Request.context` is API Gateway's requestContext, not the Lambda context.
    if event is None or isinstance(event, Request):
        return getattr(event, "lambda_context", None) or getattr(app, "lambda_context", None)
    return getattr(event, "context", None)


def _inject_lambda_context(context: Any) -> None:
    """Like Logger.inject_lambda_context, but tolerant of fake or partial contexts in tests."""
    global _cold_start
    if context is None:
        return
    fields = {
        "function_name": getattr(context, "function_name", None),
        "function_memory_size": getattr(context, "memory_limit_in_mb", None),
        "function_arn": getattr(context, "invoked_function_arn", None),
        "function_request_id": getattr(context, "aws_request_id", None),
    }
    present = {name: value for name, value in fields.items() if value is not None}
    if present:
        bind(cold_start=_cold_start, **present)
        _cold_start = False


def _scrub_deep(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {key: _scrub_deep(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_deep(item) for item in value]
    return value
