"""The pure arithmetic of bench/requests.py: item sizes, capacity units, dollars."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _load_bench() -> ModuleType:
    # bench/ is not a package, and its file is named like the `requests` library: load it by path
    path = Path(__file__).resolve().parents[2] / "bench" / "requests.py"
    spec = importlib.util.spec_from_file_location("fleetrun_bench_requests", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

TABLE = bench.TableShape(
    keys=("pk", "sk"),
    indexes=(
        bench.IndexShape("list-index", ("list_pk", "list_sk"), "ALL"),
        bench.IndexShape("claim-index", ("claim_pk", "claim_sk"), "KEYS_ONLY"),
    ),
)


def _run(**extra: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"pk": {"S": "TASK#1"}, "sk": {"S": "RUN#n1"}, "status": {"S": "pending"}, **extra}


CLAIM_KEYS = {"claim_pk": {"S": "RUNNER#n1"}, "claim_sk": {"S": "05#1#000000"}}


# --- sizes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({"S": "abc"}, 3),
        ({"S": "é"}, 2),
        ({"N": "0"}, 2),
        ({"N": "12345"}, 4),
        ({"N": "-1.50"}, 2),
        ({"N": "1000"}, 2),
        ({"BOOL": True}, 1),
        ({"NULL": True}, 1),
        ({"SS": ["a", "bc"]}, 3),
        ({"L": [{"S": "ab"}, {"N": "1"}]}, 3 + (1 + 2) + (1 + 2)),
        ({"M": {"k": {"S": "v"}}}, 3 + 1 + 1 + 1),
        ({"M": {}}, 3),
    ],
)
def test_attribute_size_follows_dynamodb_rules(value: dict[str, object], size: int) -> None:
    # GIVEN one attribute value in wire form / WHEN sized / THEN DynamoDB's documented bytes
    assert bench.attribute_size(value) == size


def test_item_size_counts_names_and_values() -> None:
    assert bench.item_size({"pk": {"S": "TASK#1"}, "n": {"N": "7"}}) == 2 + 6 + 1 + 2
    assert bench.item_size(None) == 0


@pytest.mark.parametrize(("size", "units"), [(0, 1), (1, 1), (1024, 1), (1025, 2), (3000, 3)])
def test_write_units_per_started_kilobyte(size: int, units: int) -> None:
    assert bench.write_units(size) == units


@pytest.mark.parametrize(
    ("size", "consistent", "units"),
    [(0, True, 1.0), (0, False, 0.5), (4096, True, 1.0), (4097, True, 2.0), (9000, False, 1.5)],
)
def test_read_units_per_started_four_kilobytes(size: int, consistent: bool, units: float) -> None:
    assert bench.read_units(size, consistent) == units


# --- write units of one item change -------------------------------------------------------------
def test_new_item_in_a_sparse_index_writes_the_table_and_the_index() -> None:
    assert bench.change_units(TABLE, None, _run(**CLAIM_KEYS)) == {"table": 1.0, "claim-index": 1.0}


def test_new_item_outside_every_index_writes_only_the_table() -> None:
    assert bench.change_units(TABLE, None, _run()) == {"table": 1.0}


def test_removing_index_keys_deletes_the_index_entry() -> None:
    # GIVEN a claimable run / WHEN the claim removes its claim keys / THEN one index delete
    before = _run(**CLAIM_KEYS)
    after = _run(status={"S": "running"})
    assert bench.change_units(TABLE, before, after) == {"table": 1.0, "claim-index": 1.0}


def test_keys_only_index_ignores_non_key_changes() -> None:
    before = _run(**CLAIM_KEYS)
    after = _run(**CLAIM_KEYS, progress={"N": "40"})
    assert bench.change_units(TABLE, before, after) == {"table": 1.0}


def test_changing_an_index_key_costs_a_delete_and_a_put() -> None:
    before = _run(**CLAIM_KEYS)
    after = _run(claim_pk={"S": "RUNNER#n1"}, claim_sk={"S": "05#1#000001"})
    assert bench.change_units(TABLE, before, after) == {"table": 1.0, "claim-index": 2.0}


def test_all_projection_index_rewrites_on_any_change() -> None:
    listed = {"list_pk": {"S": "TASK"}, "list_sk": {"S": "1"}}
    before = _run(**listed)
    after = _run(**listed, progress={"N": "40"})
    assert bench.change_units(TABLE, before, after) == {"table": 1.0, "list-index": 1.0}
    assert bench.change_units(TABLE, before, dict(before)) == {"table": 1.0}


def test_larger_of_before_and_after_is_charged() -> None:
    big = _run(output={"S": "x" * 1500})
    assert bench.change_units(TABLE, big, _run())["table"] == 2.0


def test_transactions_double_the_table_write_only() -> None:
    assert bench.change_units(TABLE, None, _run(**CLAIM_KEYS), transactional=True) == {
        "table": 2.0, "claim-index": 1.0,
    }


def test_failed_conditional_write_costs_the_existing_item_and_no_index() -> None:
    assert bench.change_units(TABLE, _run(**CLAIM_KEYS), None, failed=True) == {"table": 1.0}
    assert bench.change_units(TABLE, None, None, failed=True) == {"table": 1.0}
    assert bench.change_units(TABLE, _run(**CLAIM_KEYS), None, failed=True, transactional=True) == {"table": 2.0}


def test_deleting_an_item_removes_its_index_entries() -> None:
    assert bench.change_units(TABLE, _run(**CLAIM_KEYS), None) == {"table": 1.0, "claim-index": 1.0}


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ({"pk": {"S": "TASK#1"}, "sk": {"S": "META"}}, "task"),
        ({"pk": {"S": "TASK#1"}, "sk": {"S": "RUN#n1"}}, "run"),
        ({"pk": {"S": "TASK#1"}, "sk": {"S": "EVT#01J"}}, "event"),
        ({"pk": {"S": "STATS#all"}, "sk": {"S": "0"}}, "stats"),
        ({"pk": {"S": "NODE#n1"}, "sk": {"S": "META"}}, "node"),
    ],
)
def test_item_kind_from_key(key: dict[str, dict[str, str]], kind: str) -> None:
    assert bench.item_kind(key) == kind


# --- dollars ----------------------------------------------------------------------------------------
def test_usd_per_million_prices_each_unit() -> None:
    run = bench.PerRun(write_units=6, read_units=4, sqs_requests=0.5, api_requests=2, lambda_invocations=2,
                       lambda_gb_seconds=0.1, kms_requests=0)
    usd = bench.usd_per_million(run)
    assert usd["dynamodb_writes"] == pytest.approx(3.75)
    assert usd["dynamodb_reads"] == pytest.approx(0.5)
    assert usd["sqs"] == pytest.approx(0.2)
    assert usd["api_gateway"] == pytest.approx(7.0)
    assert usd["lambda_requests"] == pytest.approx(0.4)
    assert usd["lambda_duration"] == pytest.approx(1.66667)


def test_step_functions_model_counts_transitions_lambdas_and_status_writes() -> None:
    # GIVEN 3 steps on 1,000 nodes, 100 ms per Lambda at 512 MB
    model = bench.step_functions_per_run(3, 1000, 100.0)
    # THEN steps + 2 transitions per child plus the parent's share, a Lambda and a write per step
    assert model["state_transitions"] == pytest.approx(5.003)
    assert model["lambda_invocations"] == 3
    assert model["lambda_gb_seconds"] == pytest.approx(0.15)
    assert model["write_units"] == 3
    usd = bench.step_functions_usd_per_million(3, 1000, 100.0)
    assert usd["state_transitions"] == pytest.approx(125.075)
    assert sum(usd.values()) == pytest.approx(125.075 + 0.6 + 2.500005 + 1.875)
