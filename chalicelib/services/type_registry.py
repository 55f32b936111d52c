"""The task type registry: the built-ins of `domain/task_types.py` and the types admins define.

A task is pinned to the version of its type it was created with (`type_version`): every
service that acts on a task reads its type through `task_type_of`, so a new version never
changes the steps or the parameter schema of a task already created. Versions are immutable,
so each is cached per container without expiry; the head (latest version, retired or not) is
read consistently when a task is created, so a retire or a new version counts at once.

Choices the contract leaves open: `POST` of a live type's name is `409 conflict` (use `PUT`);
`POST` of a retired type's name revives it as its next version (tasks pinned to the old
versions keep them). `PUT`, `GET` and `DELETE` of a retired type answer `404 not_found`.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Final

from chalicelib import clock
from chalicelib.domain import type_definitions
from chalicelib.domain.records import Task
from chalicelib.domain.task_types import REGISTRY, TaskType
from chalicelib.errors import Conflict, NotFound, UnknownTaskType, ValidationFailed
from chalicelib.observability import logger
from chalicelib.store import pages
from chalicelib.store import task_types as store
from chalicelib.store.models.task_types import TaskTypeItem

#: how often a new version is tried again after another admin's version won the race
_ATTEMPTS: Final = 3
#: listing positions of our own (the store's keys hold neither name): the next built-in, the first defined type
_BUILTINS_FROM: Final = "builtins_from"
_DEFINED_FROM_START: Final[dict[str, Any]] = {"defined_from_start": True}


def resolve(name: str, version: int) -> TaskType:
    """One version of a type (a built-in is version 1). Raises UnknownTaskType when there is
    no such version: the task names a type this registry never had."""
    builtin = REGISTRY.get(name)
    if builtin is not None:
        return builtin
    return _stored(name, int(version))


def task_type_of(task: Task) -> TaskType:
    """The type of `task` at the version it was created with. Raises UnknownTaskType."""
    return resolve(task.type, int(task.type_version))


def current(name: str) -> TaskType:
    """The latest version of a type new tasks may use. Raises UnknownTaskType for a name that
    is not a built-in or a live defined type (retired types take no new tasks)."""
    builtin = REGISTRY.get(name)
    if builtin is not None:
        return builtin
    head = store.head(name)
    if head is None or head.retired:
        raise UnknownTaskType(name, REGISTRY)
    return _stored(name, int(head.version))


def define(definition: dict[str, Any], actor: str) -> TaskType:
    """Create a type (version 1), or revive a retired one as its next version.

    Raises ValidationFailed (a rule of the definition), Conflict (a built-in's name, a live
    type's name, or a race lost too often), Busy.
    """
    name = definition["name"]
    if name in REGISTRY:
        raise Conflict(f"{name} is a built-in task type: it cannot be replaced")
    type_definitions.check(definition)
    for _ in range(_ATTEMPTS):
        head = store.head(name)
        if head is not None and not head.retired:
            raise Conflict(f"task type {name} exists (version {int(head.version)}): PUT /v1/task-types/{name} "
                           "makes a new version")
        try:
            return _add_version(definition, 1 if head is None else int(head.version) + 1, actor)
        except store.VersionTaken:
            continue
    raise Conflict(f"task type {name} kept changing while it was created; retry")


def update(name: str, definition: dict[str, Any], actor: str) -> TaskType:
    """Make the next version of a live type; tasks already created keep theirs.

    Raises NotFound (no such live type), Conflict (a built-in, or a race lost too often),
    ValidationFailed, Busy.
    """
    if name in REGISTRY:
        raise Conflict(f"{name} is a built-in task type: it cannot be replaced")
    if definition.get("name", name) != name:
        raise ValidationFailed("the name in the body must be the name in the path",
                               [{"path": "$.name", "message": f"must be {name!r} (the path's name) or left out"}])
    definition = {**definition, "name": name}
    type_definitions.check(definition)
    for _ in range(_ATTEMPTS):
        head = _live_head(name)
        try:
            return _add_version(definition, int(head.version) + 1, actor)
        except store.VersionTaken:
            continue
    raise Conflict(f"task type {name} kept changing while it was updated; retry")


def retire(name: str) -> TaskType:
    """Retire a defined type: new tasks of it are refused, existing ones run on pinned to
    their versions. Raises NotFound (no such live type), Conflict (a built-in, or it
    changed meanwhile)."""
    if name in REGISTRY:
        raise Conflict(f"{name} is a built-in task type: it cannot be retired")
    head = _live_head(name)
    if not store.retire(name, int(head.version), clock.now_iso()):
        raise Conflict(f"task type {name} changed while it was retired; retry")
    logger.info("task type retired", extra={"task_type": name, "version": int(head.version)})
    return _stored(name, int(head.version))


def show(name: str) -> dict[str, Any]:
    """The latest version of a built-in or live defined type. Raises NotFound."""
    builtin = REGISTRY.get(name)
    return builtin.describe() if builtin is not None else _described(_live_head(name))


def listing(limit: int, cursor: str | None) -> pages.Page:
    """One page of the built-ins by name, then of the live defined types by name (latest versions).

    Raises ValidationFailed for a cursor that is not one of this listing's."""
    position = pages.start_key(cursor)
    if position is not None and _BUILTINS_FROM not in position:  # past the built-ins
        start = None if position == _DEFINED_FROM_START else position
        items, last_key = store.page(limit, start)
        return pages.page([_described(item) for item in items], last_key)
    offset = (position or {}).get(_BUILTINS_FROM, 0)
    if not isinstance(offset, int) or offset < 0:
        raise ValidationFailed("invalid query parameter cursor",
                               [{"path": "$query.cursor", "message": "not a cursor of this listing"}])
    names = sorted(REGISTRY)[offset:offset + limit]
    builtins = [REGISTRY[name].describe() for name in names]
    if offset + limit < len(REGISTRY):
        return pages.page(builtins, {_BUILTINS_FROM: offset + limit})
    if len(names) == limit:  # a page full of built-ins: the defined types start on the next one
        return pages.page(builtins, _DEFINED_FROM_START)
    items, last_key = store.page(limit - len(names), None)
    return pages.page([*builtins, *(_described(item) for item in items)], last_key)


def _live_head(name: str) -> TaskTypeItem:
    head = store.head(name)
    if head is None or head.retired:
        raise NotFound(f"task type {name} not found")
    return head


def _add_version(definition: dict[str, Any], version: int, actor: str) -> TaskType:
    stored = type_definitions.task_type(definition, version)
    text = json.dumps(stored.definition(), separators=(",", ":"))
    store.add_version(stored.name, version, text, clock.now_iso(), actor)
    logger.info("task type version created", extra={"task_type": stored.name, "version": version})
    return stored


def _described(item: TaskTypeItem) -> dict[str, Any]:
    return type_definitions.task_type(json.loads(item.definition), int(item.version)).describe()


# Versions never change once written: a cached one is always right. The cached TaskType's schema
# object is what `validation.validator` compiles once, so each version is compiled once too.
@functools.lru_cache(maxsize=512)
def _stored(name: str, version: int) -> TaskType:
    item = store.version(name, version)
    if item is None:
        raise UnknownTaskType(name, REGISTRY)
    return type_definitions.task_type(json.loads(item.definition), version)


def forget() -> None:
    """Drop cached versions (tests that reset the table)."""
    _stored.cache_clear()
