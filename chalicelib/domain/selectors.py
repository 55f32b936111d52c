"""Label selectors (API.md `target_selector`, `GET /v1/nodes?label=`): which nodes a set of
label pairs picks, and what a node shows of itself to selectors.

A selector is a set of `key: value` pairs; a node matches when its labels hold every pair.
A node in maintenance - or offline after going offline from maintenance, since it comes back
to maintenance - is left out of every selection: it is being cleaned, not given work.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from chalicelib.domain.node_states import NodeStatus
from chalicelib.errors import ValidationFailed

#: labels per node and pairs per selector: every label is one item of the label index, and a
#: change of a node's labels rewrites them all in one transaction (DynamoDB: at most 100 items,
#: and a PATCH deletes up to MAX_LABELS old pairs and writes up to MAX_LABELS new ones)
MAX_LABELS: Final = 16
#: the most index items one resolution reads (the queried pair's partition): a selector whose
#: first pair is that broad is refused, so no request reads without bound
MAX_INDEX_READ: Final = 50_000
#: `GET /v1/nodes?label=k:v`: key and value split on the first ':'
_NO_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_KEY_CHARS: Final = 128
_VALUE_CHARS: Final = 256

Labels = Mapping[str, str]


def selectable(status: str | None, offline_from: str | None) -> bool:
    """Whether a node in `status` (offline from `offline_from`) may be picked by a selector."""
    if status == NodeStatus.MAINTENANCE:
        return False
    return not (status == NodeStatus.OFFLINE and offline_from == NodeStatus.MAINTENANCE)


def matches(labels: Labels, selector: Labels) -> bool:
    """Whether `labels` hold every pair of `selector`."""
    return all(labels.get(key) == value for key, value in selector.items())


def queried_pair(selector: Labels) -> tuple[str, str]:
    """The pair whose index partition a resolution reads: the first in sorted order, so the same
    selector always costs the same."""
    key = min(selector)
    return key, selector[key]


def describe(selector: Labels) -> str:
    """`pool=cdn,region=eu`: a selector as people write it (CLI, messages)."""
    return ",".join(f"{key}={selector[key]}" for key in sorted(selector))


def label_filters(values: Sequence[str]) -> dict[str, str] | None:
    """The selector of `GET /v1/nodes?label=pool:cdn&label=region:eu` (every pair must hold);
    None when two of them give one key different values (no node can match).

    Raises ValidationFailed (path `$query.label`) for a value without ':', an empty key, a
    control character, a key or value too long, or more than MAX_LABELS filters.
    """
    problems = [problem for value in values if (problem := _filter_problem(value))]
    if len(values) > MAX_LABELS:
        problems.append(f"at most {MAX_LABELS} label filters")
    if problems:
        raise ValidationFailed(
            f"invalid query parameter label: {problems[0]}",
            [{"path": "$query.label", "message": problem} for problem in problems],
        )
    pairs = [value.partition(":")[::2] for value in values]
    selector = dict(pairs)
    return selector if len(selector) == len(set(pairs)) else None


def _filter_problem(value: str) -> str | None:
    key, colon, wanted = value.partition(":")
    if not colon or not key:
        return f"{value[:40]!r} is not key:value (a key of 1-{_KEY_CHARS} characters, then ':')"
    if _NO_CONTROL.search(value):
        return "must not contain control characters or lone surrogates"
    if len(key) > _KEY_CHARS or len(wanted) > _VALUE_CHARS:
        return f"a key has at most {_KEY_CHARS} characters, a value at most {_VALUE_CHARS}"
    return None
