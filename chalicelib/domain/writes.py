"""What a change writes, said without a database: field values and guard predicates.

The transition tables (task_transitions.py, run_transitions.py, node_states.py) describe
every write as a `Change`: the allowed source statuses, the extra guard as `Predicate`s, and
every attribute it sets (`value`), clears (`CLEAR`) or adds to (`Add`). A repository turns
a Change into one conditional update: the DynamoDB one into PynamoDB actions and a
condition expression, the in-memory one by evaluating the predicates on its dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from chalicelib.errors import UnknownAction


class _Clear:
    def __repr__(self) -> str:
        return "CLEAR"


#: a field value that removes the attribute (the API shows it as null)
CLEAR: Final[Any] = _Clear()


@dataclass(frozen=True)
class Add:
    """Add `amount` to a number attribute (DynamoDB ADD): no read, no lost update."""

    amount: int


@dataclass(frozen=True)
class Predicate:
    """One clause of a guard: `attribute <op> value`.

    ops: `==`, `<`, `>`, `exists`, `missing` (value unused), `in` (value: a frozenset).
    `==` with a value of None means "missing": a stored null and an absent attribute are one.
    """

    attribute: str
    op: str
    value: Any = None

    def holds(self, item: Mapping[str, Any]) -> bool:
        current = value_at(item, self.attribute)
        if self.op == "exists":
            return current is not None
        if self.op == "missing":
            return current is None
        if self.op == "==":
            return bool(current == self.value)
        if self.op == "in":
            return current in self.value
        if current is None:
            return False
        if self.op == "<":
            return bool(current < self.value)
        if self.op == ">":
            return bool(current > self.value)
        raise ValueError(f"unknown predicate op {self.op!r}")


def value_at(item: Mapping[str, Any], name: str) -> Any:
    """`item[name]`, where a dotted name reaches into a map (`counts.pending`)."""
    head, _, rest = name.partition(".")
    value = item.get(head)
    if rest:
        return value_at(value, rest) if isinstance(value, Mapping) else None
    return value


def eq(attribute: str, value: Any) -> Predicate:
    return Predicate(attribute, "==", value) if value is not None else Predicate(attribute, "missing")


def lt(attribute: str, value: Any) -> Predicate:
    return Predicate(attribute, "<", value)


def gt(attribute: str, value: Any) -> Predicate:
    return Predicate(attribute, ">", value)


def missing(attribute: str) -> Predicate:
    return Predicate(attribute, "missing")


def among(attribute: str, values: frozenset[str]) -> Predicate:
    return Predicate(attribute, "in", frozenset(values))


@dataclass(frozen=True)
class Transition:
    """One row of a transition table: the action, the statuses it may start from, the status
    it enters (None: it keeps the status), and how it builds its fields and guard."""

    action: str
    sources: frozenset[str]
    target: str | None
    #: (the item as read, the caller's inputs) -> (fields, guard predicates)
    build: Callable[[Any, Any], tuple[dict[str, Any], tuple[Predicate, ...]]] | None = None


def transition_of(table: Mapping[str, Transition], kind: str, action: str) -> Transition:
    """The row of `action` in a `kind` table (`task`, `run`, `node`). Raises UnknownAction."""
    transition = table.get(action)
    if transition is None or transition.build is None:
        raise UnknownAction(f"unknown {kind} action {action!r}")
    return transition


@dataclass(frozen=True)
class Change:
    """One conditional update of one item, as a transition table declares it.

    `kind` is `task`, `run` or `node`; `key` the item's id parts. `sources` is None for a
    change that keeps the status (a heartbeat, a halt).
    """

    kind: str
    key: tuple[str, ...]
    action: str
    sources: frozenset[str] | None
    fields: Mapping[str, Any]
    guard: tuple[Predicate, ...] = field(default=())

    @property
    def target(self) -> str | None:
        status = self.fields.get("status")
        return status if isinstance(status, str) else None

    def holds(self, item: Mapping[str, Any]) -> bool:
        """Whether the guard (sources and predicates) holds on `item` as stored."""
        if self.sources is not None and item.get("status") not in self.sources:
            return False
        return all(p.holds(item) for p in self.guard)

    def applied_to(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """`item` after this change (for stores that keep items as dicts)."""
        result = dict(item)
        for name, value in self.fields.items():
            head, _, rest = name.partition(".")
            if rest:  # one level of map: `counts.pending`
                result[head] = Change(self.kind, self.key, self.action, None, {rest: value}).applied_to(
                    result.get(head) or {})
            elif value is CLEAR:
                result.pop(name, None)
            elif isinstance(value, Add):
                result[name] = (result.get(name) or 0) + value.amount
            else:
                result[name] = value
        return result
