"""What the jobs of a recount in chunks read of a large task's runs (services/recount.py), kept
until the last job of the pass commits the recount.

One item per job under the task's key, `RECOUNT#<pass id>#<first partition>`, holding the run
partitions it read (`first` to `stop`), and the counts, progress, marks and leases of one read of
them. A job that runs twice writes the item whole again: it holds one read, never a mix of two,
so its counts always match its marks. The items expire a day after they are written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from chalicelib import aws, clock, config
from chalicelib.domain import retention
from chalicelib.store.models import TTL_ATTRIBUTE, task_pk
from chalicelib.store.prefix_query import items_under

#: how long a part is kept: a pass takes minutes, its parts are read only by its last job
KEPT_SECONDS: Final = retention.DAY


def _sk(pass_id: str, first: int | None = None) -> str:
    return f"RECOUNT#{pass_id}#" + ("" if first is None else f"{first:05d}")


def save(task_id: str, pass_id: str, partitions: range, part: Mapping[str, Any]) -> None:
    """Keep what one job read of the run partitions `partitions` (a JSON-ready mapping)."""
    aws.client("dynamodb").put_item(TableName=config.table_name(), Item={
        "pk": {"S": task_pk(task_id)}, "sk": {"S": _sk(pass_id, partitions.start)},
        "stop": {"N": str(partitions.stop)}, "part": {"S": json.dumps(part, separators=(",", ":"))},
        TTL_ATTRIBUTE: {"N": str(int(clock.now_epoch()) + KEPT_SECONDS)},
    })


def read(task_id: str, pass_id: str) -> dict[int, tuple[int, dict[str, Any]]]:
    """Every part the pass kept: first partition -> (stop, what was read)."""
    return {int(item["sk"]["S"].rsplit("#", 1)[1]): (int(item["stop"]["N"]), json.loads(item["part"]["S"]))
            for item in items_under(task_pk(task_id), _sk(pass_id))}
