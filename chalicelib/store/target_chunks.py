"""Reads of single target chunks (`TGT#<00000>`): what one dispatch chunk needs, never the
whole target list."""

from __future__ import annotations

from chalicelib.store import backend
from chalicelib.store.dynamo import TARGET_CHUNK_SIZE

__all__ = ["TARGET_CHUNK_SIZE", "nodes_of_part", "parts_per_chunk"]


def parts_per_chunk(part_size: int) -> int:
    """How many dispatch chunks of `part_size` nodes one target chunk makes."""
    return -(-TARGET_CHUNK_SIZE // part_size)


def nodes_of_part(task_id: str, first_chunk: int, part: int, part_size: int) -> list[str]:
    """The nodes of dispatch chunk `part` of the targets stored from chunk `first_chunk` on: one
    read. Parts run chunk by chunk, so a target chunk left partial by a growth shifts nothing
    (its last parts are simply empty)."""
    per = parts_per_chunk(part_size)
    nodes = backend.current().load_target_chunk(task_id, first_chunk + part // per)
    start = (part % per) * part_size
    return nodes[start:start + part_size]
