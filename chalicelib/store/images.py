"""The image catalog: one item per (repository, tag), written only when something changed.

Keys: `IMG#<project>` (escaped: `key_parts.part`) / `<repository>:<tag>` (Harbor's names never
contain ":"), and the list index partition `IMAGE` sorted the same way for the listing across
projects. Every write is conditional on what the sync read, so two syncs racing never undo
each other's newer data.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any, Final, cast

from pynamodb.exceptions import PynamoDBException

from chalicelib.domain.images import Tagged
from chalicelib.store import index_reads
from chalicelib.store.key_parts import part
from chalicelib.store.models import ImageItem
from chalicelib.store.writes import is_condition_failure

LIST_PK: Final = "IMAGE"


class Upsert(StrEnum):
    INSERTED = "inserted"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def image_pk(project: str) -> str:
    return f"IMG#{part(project)}"


def image_sk(repository: str, tag: str) -> str:
    return f"{repository}:{tag}"


def project_of(repository: str) -> str:
    return repository.partition("/")[0]


def load(project: str | None = None, repository: str | None = None) -> dict[tuple[str, str], ImageItem]:
    """Every catalog row in a scope (removed ones too): the whole catalog, a project, or a repository."""
    found: Iterable[Any]
    if repository is not None:
        found = ImageItem.query(image_pk(project_of(repository)), ImageItem.sk.startswith(f"{repository}:"),
                                consistent_read=True)
    elif project is not None:
        found = ImageItem.query(image_pk(project), consistent_read=True)
    else:
        found = index_reads.iter_hydrated(ImageItem, ImageItem.list_index.query(LIST_PK))
    return {(item.repository, item.tag): item for item in cast(Iterable[ImageItem], found)}


def upsert(seen: Tagged, existing: ImageItem | None, now: str) -> Upsert:
    """Insert a new tag, or update one whose digest or size changed (or that was removed and is
    back). A lost race (another sync wrote first) counts as unchanged: that sync wrote it."""
    if existing is None:
        item = ImageItem(
            image_pk(project_of(seen.repository)), image_sk(seen.repository, seen.tag),
            project=project_of(seen.repository), repository=seen.repository, tag=seen.tag, digest=seen.digest,
            size_bytes=seen.size_bytes, pushed_at=seen.pushed_at, synced_at=now,
            list_pk=LIST_PK, list_sk=image_sk(seen.repository, seen.tag),
        )
        inserted = _written(lambda: item.save(condition=ImageItem.pk.does_not_exist()))
        return Upsert.INSERTED if inserted else Upsert.UNCHANGED
    restored = existing.removed_at is not None
    if not restored and existing.digest == seen.digest and int(existing.size_bytes) == seen.size_bytes:
        return Upsert.UNCHANGED
    actions: list[Any] = [
        ImageItem.digest.set(seen.digest), ImageItem.size_bytes.set(seen.size_bytes),
        ImageItem.synced_at.set(now), ImageItem.removed_at.remove(),
        ImageItem.pushed_at.set(seen.pushed_at) if seen.pushed_at else ImageItem.pushed_at.remove(),
    ]
    guard = (ImageItem.digest == existing.digest) & (ImageItem.synced_at == existing.synced_at)
    if not _written(lambda: existing.update(actions=actions, condition=guard)):
        return Upsert.UNCHANGED
    return Upsert.INSERTED if restored else Upsert.UPDATED


def mark_removed(existing: ImageItem, now: str) -> bool:
    """Mark a tag gone from Harbor; False when it changed since it was read (a sync saw it again)."""
    actions: list[Any] = [ImageItem.removed_at.set(now), ImageItem.synced_at.set(now)]
    guard = ImageItem.removed_at.does_not_exist() & (ImageItem.synced_at == existing.synced_at)
    return _written(lambda: existing.update(actions=actions, condition=guard))


def _written(write: Any) -> bool:
    try:
        write()
    except PynamoDBException as error:
        if is_condition_failure(error):
            return False
        raise
    return True


def page(project: str | None, include_removed: bool, limit: int,
         start_key: dict[str, Any] | None) -> tuple[list[ImageItem], dict[str, Any] | None]:
    """One page of the catalog sorted by repository and tag, filled up to `limit` across
    DynamoDB pages when removed rows are filtered out."""
    condition = None if include_removed else ImageItem.removed_at.does_not_exist()
    items: list[ImageItem] = []
    last_key = start_key
    while True:
        if project is not None:
            result: Any = ImageItem.query(image_pk(project), filter_condition=condition, limit=limit,
                                          last_evaluated_key=last_key, page_size=max(limit, 25))
        else:
            result = ImageItem.list_index.query(LIST_PK, filter_condition=condition, limit=limit,
                                                last_evaluated_key=last_key, page_size=max(limit, 25))
        for item in result:
            items.append(item)
            if len(items) == limit:
                return index_reads.hydrate(ImageItem, items), _key_of(item, by_project=project is not None)
        last_key = result.last_evaluated_key
        if not last_key:
            return index_reads.hydrate(ImageItem, items), None


def _key_of(item: ImageItem, by_project: bool) -> dict[str, Any]:
    key: dict[str, Any] = {"pk": {"S": item.pk}, "sk": {"S": item.sk}}
    if not by_project:
        key.update(list_pk={"S": item.list_pk}, list_sk={"S": item.list_sk})
    return key
