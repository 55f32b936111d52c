"""Live output (API.md "Agents and nodes"): agents append ordered chunks while a step runs,
users read an attempt's whole output by pages.

Appending reads the run (the lease check) and the attempt's last chunk, then writes one item:
the run item is never written (its stream records feed the aggregator). A chunk is scrubbed of
the task's secret values again before it is stored (the agent scrubbed it already, holding back
what could be the start of a secret split across chunks). Offsets stay the agent's.
"""

from __future__ import annotations

from typing import Any

from chalicelib import config
from chalicelib.auth import Actor
from chalicelib.domain.statuses import RUN_TERMINAL, RunStatus
from chalicelib.errors import LeaseLost, NotFound, OutputGap, PayloadTooLarge, ValidationFailed
from chalicelib.observability import logger
from chalicelib.secrets import redact
from chalicelib.services import agent, queries
from chalicelib.store import output_chunks, runs
from chalicelib.store.output_chunks import MAX_CHUNK_BYTES, MAX_POSITION, Chunk
from chalicelib.store.runs import split_run_id

#: API.md: an answer of the read route carries about this much output (a chunk is never split)
PAGE_BYTES = 1024 * 1024
#: room past the cap for the agent's line saying how much it cut
_CUT_LINE_ROOM = 1024


def max_bytes() -> int:
    """How much output one attempt may store (config.output_max_bytes)."""
    return config.output_max_bytes()


def append(node_id: str, run_id_value: str, attempt: int, offset: int, data: str) -> dict[str, Any]:
    """Store one chunk of a leased attempt's output at `offset`; a repeat of a stored chunk is a
    no-op. Raises ValidationFailed (over 64 KiB), NotFound (not this node's run), LeaseLost
    (another attempt, or the run is not running), OutputGap (the output continues elsewhere),
    PayloadTooLarge (past FLEETRUN_OUTPUT_MAX_BYTES)."""
    sent = data.encode()
    if len(sent) > MAX_CHUNK_BYTES:
        raise ValidationFailed("a chunk carries at most 64 KiB of UTF-8",
                               [{"path": "$.data", "message": f"{len(sent)} bytes, over {MAX_CHUNK_BYTES}"}])
    task_id, node = split_run_id(run_id_value)
    _leased(node_id, run_id_value, attempt)
    chunk = Chunk(task_id, node, attempt, offset, len(sent), output_chunks.digest(data))
    last = output_chunks.last_chunk(task_id, node, attempt)
    expected = last.end if last is not None else 0
    if offset == expected:
        if chunk.end > max_bytes() + _CUT_LINE_ROOM:
            raise PayloadTooLarge(f"an attempt's output is capped at {max_bytes()} bytes "
                                  "(FLEETRUN_OUTPUT_MAX_BYTES); the agent keeps head and tail")
        if output_chunks.put(chunk, redact(data, agent.secret_values(task_id))):
            return {"accepted": True, "next_offset": chunk.end}
    if offset <= expected:  # a repeat, or a race with one: the same bytes at the same place
        stored = output_chunks.find(task_id, node, attempt, offset)
        if stored is not None and stored.digest == chunk.digest:
            logger.info("output chunk repeated", extra={"task_id": task_id, "node": node, "offset": offset})
            return {"accepted": True, "next_offset": stored.end}
    raise OutputGap(run_id_value, offset, expected)


def _leased(node_id: str, run_id_value: str, attempt: int) -> None:
    run = runs.find(*split_run_id(run_id_value))
    if run is None or run.runner != node_id:
        raise NotFound(f"run {run_id_value} not found")
    if int(run.attempt) != attempt or run.status != RunStatus.RUNNING:
        raise LeaseLost(run_id_value, run.status, int(run.attempt))


def parse_position(query: dict[str, str]) -> tuple[int | None, int]:
    """`?attempt=` (1 or more; default None: the current one) and `?offset=` (0 or more; default 0).
    Raises ValidationFailed with the path of each bad one."""
    attempt, offset = query.get("attempt"), query.get("offset")
    bad = [
        {"path": f"$query.{name}", "message": f"must be an integer from {low} to {MAX_POSITION}"}
        for name, raw, low in (("attempt", attempt, 1), ("offset", offset, 0))
        if raw is not None and not (raw.isascii() and raw.isdigit() and len(raw) <= 16
                                    and low <= int(raw) <= MAX_POSITION)
    ]
    if bad:
        raise ValidationFailed("invalid query parameters", bad)
    return (int(attempt) if attempt is not None else None), (int(offset) if offset is not None else 0)


def read(actor: Actor, task_id: str, node: str, attempt: int | None, offset: int) -> dict[str, Any]:
    """About 1 MiB of an attempt's output from `offset` (default: the run's current attempt).
    `complete` once the attempt is over and this page reaches its end. Raises TaskNotFound,
    NotFound (no such run or attempt), ValidationFailed (an offset inside a character)."""
    queries.visible_task(actor, task_id)
    run = runs.find(task_id, node)
    if run is None:
        raise NotFound(f"task {task_id} has no run for node {node}")
    current = int(run.attempt)
    chosen = current if attempt is None else attempt
    if chosen > current:
        raise NotFound(f"the run of {node} has not reached attempt {chosen} (it is at {current})")
    found, last_page = output_chunks.page(task_id, node, chosen, offset, PAGE_BYTES)
    data, next_offset = _join(found, offset)
    over = chosen < current or run.status in RUN_TERMINAL
    return {"attempt": chosen, "data": data, "next_offset": next_offset, "complete": over and last_page}


def _join(found: list[Chunk], offset: int) -> tuple[str, int]:
    """The text of consecutive chunks from `offset`, and the offset after them."""
    parts: list[str] = []
    next_offset = offset
    for chunk in found:
        if chunk.offset > next_offset:  # never stored out of order; stop rather than skip bytes
            break
        text = output_chunks.text(chunk)
        skip = next_offset - chunk.offset
        if skip:
            text = _tail_from(text, skip, chunk.length)
        parts.append(text)
        next_offset = chunk.end
    return "".join(parts), next_offset


def _tail_from(text: str, skip: int, length: int) -> str:
    encoded = text.encode()
    if len(encoded) != length:  # the service scrubbed what the agent missed: offsets no longer map
        return text
    if skip < len(encoded) and (encoded[skip] & 0xC0) == 0x80:
        raise ValidationFailed("offset falls inside a character",
                               [{"path": "$.offset", "message": "use a next_offset or an offset of a push"}])
    return encoded[skip:].decode()
