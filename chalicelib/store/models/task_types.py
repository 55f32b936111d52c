"""Items of the task types admins define (API.md "Task types you define").

One immutable item per version (`TTYPE#<name>` / `V#<0000000001>`) holds that version's
definition for as long as a task may be pinned to it; the head (`TTYPE#<name>` / `HEAD`)
holds the latest version, a copy of its definition (so a listing reads one item per type)
and whether the type is retired. Only a live head carries the list-index keys (`TTYPES` /
`<name>`): a retired type drops out of the listing without a filter.
"""

from __future__ import annotations

from pynamodb.attributes import BooleanAttribute, NumberAttribute, UnicodeAttribute

from chalicelib.store.key_parts import part
from chalicelib.store.models.base import FleetrunModel, ListIndex, _Meta

HEAD_SK = "HEAD"
#: the list-index partition of the live task types, sorted by name
TYPES_LIST_PK = "TTYPES"


def task_type_pk(name: str) -> str:
    return f"TTYPE#{part(name)}"


def version_sk(version: int) -> str:
    """Zero-padded so the versions of a type sort in order."""
    return f"V#{version:010d}"


class TaskTypeItem(FleetrunModel):
    """A version of a defined task type, or its head (`sk` = HEAD)."""

    class Meta(_Meta):
        pass

    name = UnicodeAttribute()
    #: the version this item is (a version item) or the latest one (the head)
    version = NumberAttribute()
    #: the definition as compact JSON (the body of POST/PUT /v1/task-types, name included)
    definition = UnicodeAttribute()
    created_at = UnicodeAttribute()
    created_by = UnicodeAttribute()
    #: head only: DELETE sets it; new tasks of a retired type are refused
    retired = BooleanAttribute(default=False)
    list_pk = UnicodeAttribute(null=True)
    list_sk = UnicodeAttribute(null=True)

    list_index = ListIndex()
