"""What a finishing run carries: its output (inline up to 1 KiB, the rest in S3) and the
completion events that ride on the run's own write (the stream turns them into event items)."""

from __future__ import annotations

import json
from typing import Any

from chalicelib import aws, config

#: outputs larger than this go to S3 (a run item must stay small: write units are per KB)
INLINE_OUTPUT_BYTES = 1024
MAX_OUTPUT_BYTES = 64 * 1024
#: completion events up to this size travel on the run's own write (one write unit is 1 KB)
FINAL_EVENTS_BYTES = 400


def store_output(task_id: str, node: str, attempt: int, output: str | None) -> dict[str, Any]:
    """The run fields of an output: the last KiB inline, the last 64 KiB in S3."""
    if not output:
        return {}
    data = output.encode()[-MAX_OUTPUT_BYTES:]
    if len(data) <= INLINE_OUTPUT_BYTES:
        return {"output": data.decode(errors="replace")}
    key = f"outputs/{task_id}/{node}/{attempt}.txt"
    aws.client("s3").put_object(Bucket=config.outputs_bucket(), Key=key, Body=data, ContentType="text/plain")
    return {"output": data[-INLINE_OUTPUT_BYTES:].decode(errors="replace"), "output_key": key}


def pack_final_events(cleaned: list[dict[str, Any]]) -> str:
    """Completion events as stored on the run item: only what the run item does not already say
    (node, attempt and time come from the run when the stream unpacks them)."""
    rows = [[e["type"], e["step"], e["message"], e["progress"], *([e["data"]] if e["data"] else [])] for e in cleaned]
    return json.dumps(rows, separators=(",", ":"))


def unpack_final_events(packed: str, node: str, attempt: int, at: str) -> list[dict[str, Any]]:
    return [
        {"at": at, "type": row[0], "step": row[1], "node": node, "message": row[2], "progress": row[3],
         "data": row[4] if len(row) > 4 else {}, "attempt": attempt}
        for row in json.loads(packed)
    ]
