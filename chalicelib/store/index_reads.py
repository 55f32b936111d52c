"""Reading through the `list-index` and `owner-index`, whose projections carry only keys and
the few attributes listings filter on (models/base.py `LISTED_ATTRIBUTES`).

Both indexes have constant partition keys (`TASK`, `NODE`, …): projecting ALL would rewrite
every update of a listed item (each aggregator write of a task, up to ~64 KB of parameters)
into one hot index partition. So a listing reads keys from the index, then the items from
the table by `BatchGetItem` (100 keys a request), in the index's order; an item deleted in
between (expired, deregistered) is left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any, TypeVar

from pynamodb.models import Model

M = TypeVar("M", bound=Model)

#: DynamoDB's limit of keys per BatchGetItem
BATCH_GET_KEYS = 100


def hydrate(model: type[M], found: Iterable[Any], attributes: Sequence[str] | None = None) -> list[M]:
    """The table items of `found` (index entries of `model`: keys at least), in the same order."""
    entries = list(found)
    if not entries:
        return []
    keys = [(entry.pk, entry.sk) for entry in entries]
    loaded: dict[tuple[str, str], M] = {}
    for start in range(0, len(keys), BATCH_GET_KEYS):
        chunk = list(dict.fromkeys(keys[start:start + BATCH_GET_KEYS]))
        for item in model.batch_get(chunk, attributes_to_get=list(attributes) if attributes else None):
            loaded[(item.pk, item.sk)] = item  # type: ignore[attr-defined]
    return [loaded[key] for key in keys if key in loaded]


def iter_hydrated(model: type[M], found: Iterable[Any], attributes: Sequence[str] | None = None) -> Iterator[M]:
    """`hydrate` over an index query of any length, 100 entries at a time."""
    entries = iter(found)
    while chunk := list(islice(entries, BATCH_GET_KEYS)):
        yield from hydrate(model, chunk, attributes)
