"""Make moto's DynamoDB keep two promises real DynamoDB keeps, in the local runtime and tests.

1. A cancelled transaction changes nothing. moto 5.2.5 deep-copies every table a transaction
   touches and, on any failed condition, swaps the copy back in: the table gets a new stream
   shard object (a stream reader holding the old one never sees another record), writes made by
   other threads in between are lost, and every transaction pays a copy of the whole table.
   Here every condition is checked first; the operations are applied only when all hold.
2. Each request is atomic. moto's backend is not thread-safe, so two concurrent conditional
   writes can both pass their condition. One lock serialises DynamoDB requests, as the service
   serialises writes to an item.

3. A query reads its partition, not the table. moto 5.2.1 answers every Query by sorting all
   the table's items and filtering them: each query costs O(n log n) in the whole table, so
   the local runtime slowed down with its own history. A base-table query here reads only its
   hash key's items; an index query skips the sort of the whole table (its matches are sorted
   anyway). Results are unchanged.

4. `dispatcher()`: moto's server finds each request's service by walking its module list
   under one global lock; here the answer is remembered per (credential scope, target).

5. A DynamoDB or DynamoDB Streams answer is written as JSON at once. moto 5.2 walks every
   answer through the operation's output shape, member by member, trying attribute aliases:
   about half of the time a test or the local runtime spends in moto. Those answers are plain
   dictionaries already (`DynamoResult` converted the items): `json.dumps` writes them, with
   timestamps as epoch seconds and blobs as base64, as the JSON protocol wants. Errors, and any
   answer holding something else, still take moto's serializer. Clients parse the same values
   (`tests/integration/test_moto_fixes.py` compares both answers). The conversion to plain
   dictionaries before it returns plain values (strings, numbers, lists, dictionaries) at once
   instead of probing each for a `to_json` method.

6. An update expression is parsed once. moto 5.2 parses each UpdateExpression twice per
   request (the handler to validate it, the backend to run it) and then deep-copies the tree
   before substituting the request's names and values into the copy; a transition's update
   writes a dozen fields, so this was a quarter of an UpdateItem's time. Here the parsed tree
   is kept per expression string (it is never changed: the validator works on its copy) and
   the validator's copy is made by unpickling the tree's pickle, made once per tree: about three
   times faster than `copy.deepcopy`.

7. A global secondary index query reads its partition, not the table. moto 5.2 answers it by
   testing every item of the table, so each claim (the claim index) cost O(table) and the
   local runtime slowed down as its history grew. Here each table keeps its items bucketed by
   the hash key value of each global index, updated by every put, update and delete (items
   change only there), built on first use; a query's candidates are its bucket, and moto's
   own matching, sorting and paging run on them unchanged.

8. A query reads only the items its key condition selects. moto 5.2 computes the size of every
   item of the partition (or index bucket) while testing the range key condition, and sorts
   them all by comparing `DynamoType`s in Python: reading a task's targets (`TGT#…`) cost
   O(its runs and events). Here the candidates are first narrowed by the range key condition,
   with moto's own comparison functions on the same values, and sorted by their keys' plain
   values (the order `DynamoType` comparisons give); moto then matches, pages and answers them
   as before.

9. moto finds a request's handler method by listing the handler class's members on every
   request; the list is kept per class.

10. A condition expression is tokenised once per expression string (the tokens do not depend
    on the request's names and values, which are applied after).

11. A keys-only or include index answers copies of the wanted attributes. moto 5.2 converted
    the whole item to plain JSON and back once per projected attribute.

12. An update expression's tree is walked without re-asking each node's processors. moto 5.2's
    ten validators each walk the whole tree, and at every node build the tuple of node types
    they process and look up the processor again: a fifth of an UpdateItem's time. Here each
    walk builds them once; the order of visits, the hooks and the replacements are moto's.

13. An update expression's request-independent checks pass once per expression. Three of the
    ten validators (at most one clause of each kind, no path written twice, no key attribute
    written) read only the expression, its attribute names and the table's key attributes, and
    change nothing: 7 % of `bench/scale.py`'s time. Here, once they pass for an expression with
    given names on a table with given keys, later requests with the same three skip them; the
    other seven (values, the item, types) run every time, as before.

14. Creating a symmetric KMS key makes no RSA key. moto 5.2 generates a 2,048-bit RSA private
    key for every key, whatever its spec: about 55 ms, a quarter of the setup of each test that
    provisions the resources. A symmetric key never signs; its private key is generated only if
    something asks for it.

All are fixes to the stand-in, not to fleetrun: nothing here runs in AWS.
"""

from __future__ import annotations

import base64
import calendar
import copy
import datetime
import functools
import json
import pickle
import threading
import weakref
from typing import Any

_LOCK = threading.RLock()
#: held by every DynamoDB request (the durable store takes it for a consistent snapshot)
LOCK = _LOCK
_applied = False
#: where a parsed update expression keeps its own pickle (fix 6; copies are made without it)
_PICKLED = "_fleetrun_pickled"
#: moto's own tree walk, replaced by fix 12 (tests compare the two)
MOTO_TRAVERSAL: Any = None
#: where a parsed update expression keeps the (names, key attributes) its static checks passed with (fix 13)
_CHECKED = "_fleetrun_checked"
#: the most (names, key attributes) remembered per expression (fix 13)
_CHECKED_MAX = 64


def apply() -> None:
    """Patch moto (idempotent)."""
    global _applied
    if _applied:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    DynamoDBBackend.transact_write_items = _transact_write_items  # type: ignore[method-assign]
    _patch_query()
    original_call = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _LOCK:
            return original_call(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _patch_json_answers()
    _patch_update_expressions()
    _patch_index_buckets()
    _patch_action_names()
    _patch_condition_lexing()
    _patch_index_projection()
    _patch_traversal()
    _patch_static_checks()
    _patch_kms_keys()
    _applied = True


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    with _LOCK:
        seen: set[tuple[str, str]] = set()
        reasons: list[tuple[Any, Any, Any]] = []
        for entry in transact_items:
            if len(entry) > 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            table = self.get_table(op["TableName"])
            key = op["Key"] if op_type != "Put" else {
                name: op["Item"][name] for name in (table.hash_key_attr, table.range_key_attr) if name
            }
            marker = (op["TableName"], str(dict(sorted(key.items()))))
            if marker in seen:
                raise MultipleTransactionsException()
            seen.add(marker)
            expression = op.get("ConditionExpression")
            current = self.get_item(op["TableName"], key)
            if expression and not get_filter_expression(
                expression, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues"),
            ).expr(current):
                old = current.to_json()["Attributes"] if current and op.get(
                    "ReturnValuesOnConditionCheckFailure") == "ALL_OLD" else None
                reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
            else:
                reasons.append((None, None, None))
        if any(code is not None for code, _, _ in reasons):
            raise TransactionCanceledException(reasons)
        for entry in transact_items:
            op_type, op = next(iter(entry.items()))
            names, values = op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"], expression_attribute_names=names,
                              expression_attribute_values=values)
            elif op_type == "Delete":
                self.delete_item(op["TableName"], op["Key"], expression_attribute_names=names,
                                 expression_attribute_values=values)
            elif op_type == "Update":
                self.update_item(op["TableName"], op["Key"], update_expression=op["UpdateExpression"],
                                 expression_attribute_names=names, expression_attribute_values=values)


def _patch_update_expressions() -> None:
    from moto.dynamodb import models, responses
    from moto.dynamodb.parsing import validators
    from moto.dynamodb.parsing.ast_nodes import Node  # type: ignore[attr-defined]
    from moto.dynamodb.parsing.expressions import UpdateExpressionParser  # type: ignore[attr-defined]

    class ParsedOnce:
        make = staticmethod(functools.lru_cache(maxsize=1024)(UpdateExpressionParser.make))

    def copied(value: Any) -> Any:
        if isinstance(value, Node):  # a parsed tree is never changed: pickle it once
            pickled = value.__dict__.get(_PICKLED)
            if pickled is None:
                pickled = value.__dict__[_PICKLED] = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
            return pickle.loads(pickled)
        return copy.deepcopy(value)

    models.UpdateExpressionParser = ParsedOnce  # type: ignore[attr-defined]
    responses.UpdateExpressionParser = ParsedOnce  # type: ignore[attr-defined]
    validators.deepcopy = copied  # type: ignore[assignment,attr-defined]


def _patch_query() -> None:
    import inspect

    from moto.dynamodb.models.table import Table

    original_query, original_sort = Table.query, Table.sorted_items
    signature = inspect.signature(original_query)

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        call = signature.bind(self, hash_key, *args, **kwargs).arguments
        index_name = call.get("index_name")
        keep = _key_condition(self, call)
        if index_name is None and hash_key is not None and self.range_key_attr:
            partition = self.items.get(hash_key, {})

            def candidates() -> list[Any]:
                return sorted(_kept(partition.values(), keep), key=lambda item: item.range_key.cast_value)
        elif (bucket := _bucket_of(self, index_name, call.get("hash_key_conditions"))) is not None:
            def candidates() -> list[Any]:
                return _kept(bucket, keep)
        else:
            every = self.items.values()

            def candidates() -> list[Any]:
                if not self.range_key_attr:
                    return list(every)
                return [item for items in every for item in items.values()]
        with _LOCK:
            self.all_items = candidates  # this query's view of the table (requests hold _LOCK)
            try:
                return original_query(self, hash_key, *args, **kwargs)
            finally:
                del self.all_items

    def sorted_items(self: Any, hash_key_attrs: list[str], range_key_attrs: list[str | None],
                     items: list[Any]) -> list[Any]:
        names = self._generate_attr_to_sort_by(hash_key_attrs, range_key_attrs)
        try:
            items.sort(key=lambda item: tuple(item.attrs[name].cast_value for name in names))
        except TypeError:  # values of different types under one name: moto's own comparisons
            return original_sort(self, hash_key_attrs, range_key_attrs, items)
        return items

    Table.query = query  # type: ignore[method-assign]
    Table.sorted_items = sorted_items  # type: ignore[method-assign]


def _key_condition(table: Any, call: dict[str, Any]) -> Any:
    """The query's range key condition as a test of an item (fix 8), or None (no condition, or
    one moto matches itself: a multi-attribute key)."""
    from moto.dynamodb.comparisons import get_comparison_func

    comparison, conditions = call.get("range_comparison"), call.get("range_key_conditions") or []
    if not comparison or len(conditions) > 1:
        return None
    index_name = call.get("index_name")
    if conditions:
        name = conditions[-1][0]
    elif index_name:
        ranges = [key["AttributeName"] for index in table.all_indexes() if index.name == index_name
                  for key in index.schema if key["KeyType"] == "RANGE"]
        if len(ranges) != 1:
            return None
        name = ranges[0]
    else:
        name = table.range_key_attr
    test = get_comparison_func(comparison)
    values = [value.cast_value for value in call.get("range_objs") or []]

    def keep(item: Any) -> bool:
        value = item.attrs.get(name)
        return bool(value) and bool(test(value.cast_value, *values))  # moto skips an item without it

    return keep if test is not None else None


def _kept(items: Any, keep: Any) -> list[Any]:
    """`items` that pass `keep`; all of them when there is no test or it cannot compare them
    (moto then raises or matches as it would have)."""
    if keep is None:
        return list(items)
    try:
        return [item for item in items if keep(item)]
    except (TypeError, AttributeError):  # e.g. begins_with on a number
        return list(items)


class _IndexBuckets:
    """One table's items by the hash key value of its global secondary indexes (fix 7); each
    index is bucketed on its first query, then kept by every write."""

    def __init__(self, table: Any) -> None:
        self.table = weakref.ref(table)
        self.attributes = {index.name: keys[0]["AttributeName"] for index in table.global_indexes
                           if len(keys := [k for k in index.schema if k["KeyType"] == "HASH"]) == 1}
        #: per index built so far: (items by hash key value, the value each item key is under)
        self.built: dict[str, tuple[dict[Any, dict[Any, None]], dict[Any, Any]]] = {}

    def place(self, key: Any, item: Any) -> None:
        """Where `key` is now: `item` as stored, or None once it is deleted."""
        for name, (buckets, placed) in self.built.items():
            old = placed.pop(key, None)
            if old is not None:
                bucket = buckets[old]
                del bucket[key]
                if not bucket:
                    del buckets[old]
            value = item.attrs.get(self.attributes[name]) if item is not None else None
            if value is not None:
                buckets.setdefault(value, {})[key] = None
                placed[key] = value

    def items(self, name: str, value: Any) -> list[Any]:
        table = self.table()
        assert table is not None
        if name not in self.built:
            self.built[name] = self._build(table, self.attributes[name])
        found = []
        for hash_key, range_key in self.built[name][0].get(value, {}):
            partition = table.items.get(hash_key)
            item = partition.get(range_key) if table.range_key_attr else partition
            if item is not None:
                found.append(item)
        return found

    @staticmethod
    def _build(table: Any, attribute: str) -> tuple[dict[Any, dict[Any, None]], dict[Any, Any]]:
        buckets: dict[Any, dict[Any, None]] = {}
        placed: dict[Any, Any] = {}
        every = table.items.values()
        for item in (every if not table.range_key_attr else (i for items in every for i in items.values())):
            value = item.attrs.get(attribute)
            if value is not None:
                key = (item.hash_key, item.range_key)
                buckets.setdefault(value, {})[key] = None
                placed[key] = value
        return buckets, placed


_BUCKETS: weakref.WeakKeyDictionary[Any, _IndexBuckets] = weakref.WeakKeyDictionary()


def _bucket_of(table: Any, index_name: str | None, hash_conditions: Any) -> list[Any] | None:
    """The candidates of a query on a global index with one hash key (None: scan the table)."""
    if not index_name or not hash_conditions:
        return None
    buckets = _BUCKETS.get(table)
    if buckets is None:  # built on the table's first index query
        buckets = _BUCKETS[table] = _IndexBuckets(table)
    attribute = buckets.attributes.get(index_name)
    values = [value for name, value in hash_conditions if name == attribute]
    if attribute is None or len(values) != 1:
        return None
    return buckets.items(index_name, values[0])


def _place_again(table: Any, key_of: Any) -> None:
    """After a write that may have changed the item at a key: bucket it as it is stored now."""
    if (buckets := _BUCKETS.get(table)) is None:
        return
    try:
        hash_key, range_key = key_of()
        item = table.get_item(hash_key, range_key)
    except Exception:  # a key naming no item (moto refused the write): nothing changed
        return
    buckets.place((hash_key, range_key), item)


def _patch_index_buckets() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table

    put_item, delete_item, update_item = Table.put_item, Table.delete_item, DynamoDBBackend.update_item

    def put(self: Any, *args: Any, **kwargs: Any) -> Any:
        item = put_item(self, *args, **kwargs)
        if (buckets := _BUCKETS.get(self)) is not None:
            buckets.place((item.hash_key, item.range_key), item)
        return item

    def delete(self: Any, hash_key: Any, range_key: Any = None, *args: Any, **kwargs: Any) -> Any:
        try:
            return delete_item(self, hash_key, range_key, *args, **kwargs)
        finally:
            _place_again(self, lambda: (hash_key, range_key))

    def update(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return update_item(self, table_name, key, *args, **kwargs)
        finally:  # an update changes the stored item in place, even one that fails half-way
            if (table := self.tables.get(table_name)) is not None:
                _place_again(table, lambda: self.get_keys_value(table, key))

    Table.put_item = put  # type: ignore[method-assign]
    Table.delete_item = delete  # type: ignore[method-assign]
    DynamoDBBackend.update_item = update  # type: ignore[method-assign]


def _patch_action_names() -> None:
    from moto.core import responses, utils

    responses.method_names_from_class = functools.lru_cache(maxsize=None)(  # type: ignore[attr-defined,assignment]
        lambda clazz: frozenset(utils.method_names_from_class(clazz)))


def _patch_condition_lexing() -> None:
    from collections import deque

    from moto.dynamodb.comparisons import ConditionExpressionParser

    lex = ConditionExpressionParser._lex_condition_expression

    @functools.lru_cache(maxsize=1024)
    def lexed(expression: str) -> tuple[Any, ...]:  # tokens are tuples: never changed by the parser
        return tuple(lex(ConditionExpressionParser(expression, None, None)))

    def lex_once(self: Any) -> Any:
        return deque(lexed(self.condition_expression))

    ConditionExpressionParser._lex_condition_expression = lex_once  # type: ignore[method-assign]


def _patch_index_projection() -> None:
    from moto.dynamodb.models.dynamo_type import Item
    from moto.dynamodb.models.table import SecondaryIndex

    original = SecondaryIndex.project

    def project(self: Any, item: Any) -> Any:
        kind = (self.projection or {}).get("ProjectionType")
        if kind not in ("KEYS_ONLY", "INCLUDE"):
            return original(self, item)
        wanted = {*self.table_key_attrs, *(key["AttributeName"] for key in self.schema)}
        if kind == "INCLUDE":
            wanted.update(self.projection.get("NonKeyAttributes", []))
        # a copy of the wanted top-level attributes, as stored (no round trip through JSON)
        kept = {name: value for name, value in item.attrs.items() if name in wanted}
        return Item(item.hash_key, item.range_key, kept)

    SecondaryIndex.project = project  # type: ignore[method-assign]


def _patch_traversal() -> None:
    from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser, Node  # type: ignore[attr-defined]

    global MOTO_TRAVERSAL
    plain_hook = DepthFirstTraverser.pre_processing_of_child
    MOTO_TRAVERSAL = DepthFirstTraverser.traverse_node_recursively

    def traverse_node_recursively(self: Any, node: Any, child_id: int = -1) -> Any:
        kinds = self.nodes_to_be_processed()
        processors = tuple(self._processing_map().items())
        hook = None if type(self).pre_processing_of_child is plain_hook else self.pre_processing_of_child

        def visit(node: Any, child_id: int) -> Any:
            if not isinstance(node, Node):
                return node
            parent = node.parent
            if node.children is not None:
                for i, child in enumerate(node.children):
                    if hook is not None:
                        hook(node, i)
                    visit(child, i)
            if isinstance(node, kinds):
                node = next(process(node) for kind, process in processors if isinstance(node, kind))
                node.parent = parent
                if parent:
                    parent.children[child_id] = node
            return node

        return visit(node, child_id)

    DepthFirstTraverser.traverse_node_recursively = traverse_node_recursively  # type: ignore[method-assign]


def _patch_static_checks() -> None:
    from moto.dynamodb.parsing import validators

    static = (validators.ActionCountValidator, validators.OverlappingPathsValidator,
              validators.UpdateHashRangeKeyValidator)
    original_init = validators.UpdateExpressionValidator.__init__

    def init(self: Any, expression: Any, *args: Any, **kwargs: Any) -> None:
        self._fleetrun_tree = expression  # the parsed tree, shared by every request with its text (fix 6)
        original_init(self, expression, *args, **kwargs)

    def validate(self: Any) -> Any:
        checked = self._fleetrun_tree.__dict__.setdefault(_CHECKED, set())
        inputs = (tuple(sorted((self.expression_attribute_names or {}).items())), tuple(self.table.table_key_attrs))
        node = self.node_to_validate
        for processor in self.processors:
            if not (isinstance(processor, static) and inputs in checked):
                node = processor.traverse(node)
        if len(checked) >= _CHECKED_MAX:  # names that vary per request (a marker item's nodes)
            checked.clear()
        checked.add(inputs)
        return node

    validators.UpdateExpressionValidator.__init__ = init  # type: ignore[method-assign]
    validators.UpdateExpressionValidator.validate = validate  # type: ignore[method-assign]


def _patch_json_answers() -> None:
    from moto.core.responses import ActionResult, BaseResponse
    from moto.dynamodb.responses import DynamoHandler, DynamoResult
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    shape_walker = BaseResponse.serialized

    def serialized(self: Any, action_result: Any) -> Any:
        result = action_result.result
        if type(action_result) in (ActionResult, DynamoResult) and isinstance(result, dict):
            try:
                body = json.dumps(result, default=_json_value)
            except TypeError:
                pass  # something the shape walker knows how to write
            else:
                return 200, {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}, body
        return shape_walker(self, action_result)

    for handler in (DynamoHandler, DynamoDBStreamsHandler):
        handler.serialized = serialized  # type: ignore[method-assign]
    _patch_plain_values()


def _patch_plain_values() -> None:
    """moto converts each answer to plain values by testing every leaf for a `to_json` method
    (a failed attribute lookup per string): plain values are returned as they are here, and
    everything else still takes moto's conversion (which calls back into this one)."""
    from moto.dynamodb import responses
    from moto.dynamodb.models import utilities

    convert = utilities.dynamo_to_dict
    plain = (str, int, float, bool, type(None))

    def dynamo_to_dict(obj: Any) -> Any:
        kind = type(obj)
        if kind in plain:
            return obj
        if kind is dict:
            return {key: dynamo_to_dict(value) for key, value in obj.items()}
        if kind is list:
            return [dynamo_to_dict(value) for value in obj]
        return convert(obj)

    utilities.dynamo_to_dict = dynamo_to_dict
    responses.dynamo_to_dict = dynamo_to_dict  # type: ignore[attr-defined]


def _json_value(value: Any) -> float | str:
    """A timestamp or a blob as the JSON protocol writes it: epoch seconds (naive timestamps are
    UTC, as moto keeps them), base64 text (a stream record's image holds a `B` value as bytes)."""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if not isinstance(value, datetime.datetime):
        raise TypeError(f"{type(value).__name__} is not JSON")
    base = calendar.timegm(value.utctimetuple())
    return base + (value.microsecond // 1000) / 1000.0 if value.microsecond else base


def dispatcher() -> Any:
    """moto's WSGI application, finding a request's service once per (scope, target) instead of
    on every request under a lock every request shares."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    class CachedDispatcher(DomainDispatcherApplication):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(create_backend_app)
            self._by_scope: dict[tuple[str, str], Any] = {}

        def get_application(self, environ: dict[str, Any]) -> Any:
            authorization = str(environ.get("HTTP_AUTHORIZATION", ""))
            scope = authorization.partition("Credential=")[2].split(",", 1)[0].split("/")[2:4]
            if len(scope) != 2 or str(environ.get("PATH_INFO", "")).startswith("/moto-api"):
                return super().get_application(environ)
            key = ("/".join(scope), str(environ.get("HTTP_X_AMZ_TARGET", "")).split(".", 1)[0])
            app = self._by_scope.get(key)
            if app is None:
                app = self._by_scope[key] = super().get_application(environ)
            return app

    return CachedDispatcher()


class _MadeOnFirstUse:
    """Stands for the object `make()` returns, made when an attribute is first read (fix 14)."""

    def __init__(self, make: Any) -> None:
        self._make = make
        self._made: Any = None

    def __getattr__(self, name: str) -> Any:
        # only what the instance lacks comes here: its own fields before they are set (as when
        # the local runtime's snapshot unpickles it) and special names are not the made object's
        if name.startswith("_"):
            raise AttributeError(name)
        if self._made is None:
            self._made = self._make()
        return getattr(self._made, name)


def _patch_kms_keys() -> None:
    from moto.kms import models as kms_models

    generate = kms_models.generate_private_key  # type: ignore[attr-defined]

    def generate_private_key(key_spec: str) -> Any:
        if key_spec == "SYMMETRIC_DEFAULT":
            return _MadeOnFirstUse(functools.partial(generate, key_spec))
        return generate(key_spec)

    kms_models.generate_private_key = generate_private_key  # type: ignore[attr-defined]
