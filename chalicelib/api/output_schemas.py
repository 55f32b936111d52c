"""Schemas of live output (API.md "Agents and nodes", "Reading output"): the agent's chunk and
the answers of the append and read routes. `schemas.SCHEMAS` takes them in."""

from __future__ import annotations

from typing import Final

from chalicelib.api.representations import record
from chalicelib.domain.task_requests import Schema, body
from chalicelib.store.output_chunks import MAX_POSITION

#: offsets are byte counts: JSON integers stay exact below 2^53
_OFFSET: Final[Schema] = {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}

OutputChunkRequest: Final[Schema] = body(
    {
        "attempt": {"type": "integer", "minimum": 1, "description": "the attempt the run was claimed for"},
        "offset": {**_OFFSET, "description": "bytes (UTF-8) of this attempt's output already sent"},
        "data": {"type": "string", "minLength": 1, "maxLength": 65_536,
                 "description": "the next output, at most 64 KiB of UTF-8"},
    },
    required=("attempt", "offset", "data"),
    description="Live output in order: a repeat of a stored chunk is a no-op; a gap is a 409 whose "
                "error carries `expected_offset`.",
)
OutputAccepted: Final[Schema] = record(
    {"accepted": {"const": True}, "next_offset": {**_OFFSET, "description": "where the next chunk starts"}},
)
RunOutput: Final[Schema] = record(
    {
        "attempt": {"type": "integer", "minimum": 1},
        "data": {"type": "string", "description": "output from `offset` on (about 1 MiB at most)"},
        "next_offset": {**_OFFSET, "description": "the `offset` of the next page"},
        "complete": {"type": "boolean", "description": "the attempt is over and this page reaches its end"},
    },
    "A page of one attempt's output of a node run.",
)

OUTPUT_REQUEST_SCHEMAS: Final[dict[str, Schema]] = {"OutputChunkRequest": OutputChunkRequest}
OUTPUT_SCHEMAS: Final[dict[str, Schema]] = {
    **OUTPUT_REQUEST_SCHEMAS, "OutputAccepted": OutputAccepted, "RunOutput": RunOutput,
}
