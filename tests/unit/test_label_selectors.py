"""The pure rules of label selectors: who may be selected, what matches, how `?label=` parses,
and which index writes a node change brings (domain/selectors.py, store/label_index.py)."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.node_states import NodeInputs, node_change
from chalicelib.domain.records import Node
from chalicelib.domain.selectors import MAX_LABELS, label_filters, matches, queried_pair, selectable
from chalicelib.errors import ValidationFailed
from chalicelib.store import label_index
from chalicelib.store.label_index import Seen


@pytest.mark.parametrize(("status", "offline_from", "expected"), [
    ("idle", None, True),
    ("allocated", None, True),
    ("maintenance", None, False),
    ("offline", "idle", True),
    ("offline", "allocated", True),
    ("offline", "maintenance", False),
])
def test_only_nodes_outside_maintenance_are_selectable(status, offline_from, expected):
    assert selectable(status, offline_from) is expected


def test_a_node_matches_when_its_labels_hold_every_pair():
    labels = {"pool": "cdn", "region": "eu"}
    assert matches(labels, {"pool": "cdn"})
    assert matches(labels, {"pool": "cdn", "region": "eu"})
    assert not matches(labels, {"pool": "cdn", "region": "us"})
    assert not matches(labels, {"rack": ""})


def test_the_queried_pair_is_the_first_key_in_sorted_order():
    assert queried_pair({"region": "eu", "pool": "cdn"}) == ("pool", "cdn")


class TestLabelFilters:
    def test_pairs_split_on_the_first_colon_and_all_must_hold(self):
        assert label_filters(["pool:cdn", "url:http://x", "empty:"]) == {
            "pool": "cdn", "url": "http://x", "empty": ""}

    @pytest.mark.parametrize("values", [
        ["pool"], [":cdn"], ["pool:c\u0007dn"], ["k" * 129 + ":v"], ["k:" + "v" * 257],
        [f"k{i}:v" for i in range(MAX_LABELS + 1)],
    ])
    def test_a_malformed_filter_is_a_validation_error_at_the_label_parameter(self, values):
        with pytest.raises(ValidationFailed) as refused:
            label_filters(values)
        assert {d["path"] for d in refused.value.document()["error"]["details"]} == {"$query.label"}

    def test_the_same_pair_twice_is_one_filter_and_two_values_of_one_key_match_nothing(self):
        assert label_filters(["pool:cdn", "pool:cdn"]) == {"pool": "cdn"}
        assert label_filters(["pool:cdn", "pool:gpu"]) is None


class RecordingTx:
    def __init__(self) -> None:
        self.writes: list[tuple[str, str, str, dict[str, Any]]] = []

    def save(self, item: Any) -> None:
        self.writes.append(("put", item.pk, item.sk, {"labels": dict(item.labels.attribute_values),
                                                       "selectable": item.selectable}))

    def delete(self, item: Any) -> None:
        self.writes.append(("delete", item.pk, item.sk, {}))


def applied(parts: list[Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    tx = RecordingTx()
    for part in parts:
        part(tx)
    return sorted(tx.writes)


class TestIndexMoves:
    def test_a_registration_puts_one_item_per_label_each_with_the_whole_map(self):
        labels = {"pool": "cdn", "region": "eu"}
        assert applied(label_index.moves("n1", None, Seen(labels, True))) == [
            ("put", "LABEL#pool#cdn", "n1", {"labels": labels, "selectable": True}),
            ("put", "LABEL#region#eu", "n1", {"labels": labels, "selectable": True}),
        ]

    def test_a_label_change_deletes_the_pairs_gone_and_rewrites_the_rest(self):
        moved = applied(label_index.moves("n1", Seen({"pool": "cdn", "region": "eu"}, True),
                                          Seen({"pool": "gpu", "region": "eu"}, True)))
        assert [(w[0], w[1]) for w in moved] == [
            ("delete", "LABEL#pool#cdn"), ("put", "LABEL#pool#gpu"), ("put", "LABEL#region#eu")]

    def test_a_deregistration_deletes_every_item_and_an_unchanged_node_writes_nothing(self):
        seen = Seen({"pool": "cdn"}, True)
        assert applied(label_index.moves("n1", seen, None)) == [("delete", "LABEL#pool#cdn", "n1", {})]
        assert label_index.moves("n1", seen, Seen({"pool": "cdn"}, True)) == []

    @pytest.mark.parametrize(("key", "value", "pk"), [
        ("a#b", "c", "LABEL#a%23b#c"), ("a", "b#c", "LABEL#a#b%23c"), ("a|b", "%", "LABEL#a%7Cb#%25"),
    ])
    def test_key_and_value_are_escaped_so_no_two_pairs_share_a_partition(self, key, value, pk):
        assert label_index.label_pk(key, value) == pk


class TestIndexedWrites:
    node = Node("n1", "hash", "2026-01-01T00:00:00Z", status="idle", labels={"pool": "cdn"}, selector_rev=4)

    def test_entering_maintenance_flips_selectable_guarded_by_the_revision_read(self):
        write = node_change("reclaim", self.node, NodeInputs(now="t", reclaim_task_id="T", reclaim_user="bob"))
        indexed = label_index.indexed(self.node, write)
        assert indexed is not None
        assert indexed.write.fields["selector_rev"] == 5
        assert indexed.write.guard[-1].attribute == "selector_rev"
        assert indexed.write.guard[-1].value == 4
        assert applied(indexed.parts) == [
            ("put", "LABEL#pool#cdn", "n1", {"labels": {"pool": "cdn"}, "selectable": False})]

    @pytest.mark.parametrize(("action", "inputs"), [
        ("update", {"slots": 3}), ("update", {"labels": {"pool": "cdn"}}),
        ("go_offline", {}), ("seen", {}),
        ("allocate", {"allocation": {"allocation_id": "a", "allocated_to": "u", "allocated_at": "t",
                                     "allocation_sk": "s"}}),
    ])
    def test_writes_that_leave_what_selectors_see_as_it_is_bring_no_index_write(self, action, inputs):
        write = node_change(action, self.node, NodeInputs(now="t", **inputs))
        assert label_index.indexed(self.node, write) is None


class TestCommandLine:
    def test_submit_selectors_become_the_target_selector_of_the_body(self):
        from collections import defaultdict

        from fleetrun.cli_submit import build_body

        options: dict[str, Any] = defaultdict(lambda: None, selector={"pool": "cdn"})  # every other option unset
        assert build_body("shell", [], {}, options) == {"type": "shell", "target_selector": {"labels": {"pool": "cdn"}}}

    def test_label_options_are_key_value_and_the_node_filter_is_key_colon_value(self):
        import click

        from fleetrun.cli_selectors import label_pairs, label_query

        assert label_pairs(None, None, ("pool=cdn", "url=a=b")) == {"pool": "cdn", "url": "a=b"}  # type: ignore[arg-type]
        assert label_query({"region": "eu", "pool": "cdn"}) == ["pool:cdn", "region:eu"]
        with pytest.raises(click.BadParameter):
            label_pairs(None, None, ("pool",))  # type: ignore[arg-type]
