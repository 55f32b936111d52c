"""The base of every item of the single table (table name and region bound from config on
first use), its global secondary indexes, and the key formats shared by the stores."""

from __future__ import annotations

from typing import Any

import pynamodb.connection.base
from pynamodb.attributes import UnicodeAttribute
from pynamodb.connection import TableConnection
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib import aws, config
from chalicelib.store.key_parts import part

TTL_ATTRIBUTE = "expires_at"
# PynamoDB opens a botocore session per item class and thread: let it take the thread's session
# (`chalicelib/aws.py`) instead of making another and parsing DynamoDB's model again for each
setattr(pynamodb.connection.base, "get_session", aws.session)  # noqa: B010 (not exported)


class _Meta:
    table_name = "fleetrun"
    region = "us-east-1"


class FleetrunModel(Model):
    """Base of every item: binds the table name and region from config on first use."""

    class Meta(_Meta):
        pass

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)

    @classmethod
    def _get_connection(cls) -> TableConnection:
        cls.Meta.table_name = config.table_name()
        cls.Meta.region = config.region()
        return super()._get_connection()


#: the attributes `list-index` and `owner-index` carry besides keys: what listings filter on in
#: the index (a task's status, type and tags; an image's removal). None changes on an aggregator
#: write or a heartbeat, so those writes never touch the indexes; listings read the items
#: themselves by BatchGetItem (store/index_reads.py)
LISTED_ATTRIBUTES = ["status", "type", "tags", "removed_at"]


class ListIndex(GlobalSecondaryIndex["FleetrunModel"]):
    class Meta:
        index_name = "list-index"
        projection = IncludeProjection(LISTED_ATTRIBUTES)

    list_pk = UnicodeAttribute(hash_key=True)
    list_sk = UnicodeAttribute(range_key=True)


class OwnerIndex(GlobalSecondaryIndex["FleetrunModel"]):
    class Meta:
        index_name = "owner-index"
        projection = IncludeProjection(LISTED_ATTRIBUTES)

    owner_pk = UnicodeAttribute(hash_key=True)
    owner_sk = UnicodeAttribute(range_key=True)


class ClaimIndex(GlobalSecondaryIndex["FleetrunModel"]):
    class Meta:
        index_name = "claim-index"
        projection = KeysOnlyProjection()

    claim_pk = UnicodeAttribute(hash_key=True)
    claim_sk = UnicodeAttribute(range_key=True)


class ActiveIndex(GlobalSecondaryIndex["FleetrunModel"]):
    class Meta:
        index_name = "active-index"
        projection = KeysOnlyProjection()

    active_pk = UnicodeAttribute(hash_key=True)
    active_sk = UnicodeAttribute(range_key=True)


class DueIndex(GlobalSecondaryIndex["FleetrunModel"]):
    """Sparse: when the sweeper must look at an active task next (domain/due.py). Sharded
    partitions `DUE#task#<n>`, sorted by due time; it carries the ids to read the item by. (Runs
    written before the lease watches may still hold a `DUE#lease#<n>` entry nobody reads.)"""

    class Meta:
        index_name = "due-index"
        projection = IncludeProjection(["task_id", "node"])

    due_pk = UnicodeAttribute(hash_key=True)
    due_sk = UnicodeAttribute(range_key=True)


ALL_INDEXES: tuple[type[GlobalSecondaryIndex[Any]], ...] = (ListIndex, OwnerIndex, ClaimIndex, ActiveIndex, DueIndex)


# Ids the service generates (task, schedule, subscription, event: ULIDs) and node ids (checked
# against `^[A-Za-z0-9._:-]{1,128}$` on registration) never hold a separator: they go into
# keys as they are. Every string a user chooses goes through `key_parts.part`.
def task_pk(task_id: str) -> str:
    return f"TASK#{task_id}"


def run_sk(node: str) -> str:
    return f"RUN#{node}"


def node_pk(node_id: str) -> str:
    return f"NODE#{node_id}"


def schedule_pk(schedule_id: str) -> str:
    return f"SCHEDULE#{schedule_id}"


def owner_tasks_pk(owner: str) -> str:
    """The owner-index partition of a user's tasks."""
    return f"OWNER#{part(owner)}"
