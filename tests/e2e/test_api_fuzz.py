"""schemathesis against the local runtime, as admin, operator and viewer, with every check on.

The service's own OpenAPI document (`GET /v1/openapi.json`) drives the fuzzer: every route is
called with schema-valid and schema-invalid requests, in the examples, coverage, fuzzing and
stateful phases, with a fixed seed and a time budget per role. The agent routes are called with
a registered node's token. A real Prometheus (no targets) backs the GPU trend, so its answer is
an empty trend rather than a 503.

The run passes when schemathesis reports no failure of any check — no server error, no status
code or header the document does not declare, no answer off its schema, no schema-valid request
refused (tests/e2e/fuzz_hooks.py says the one exception: service-made cursors) — and no error.
The figures (cases per role) are printed; `pytest -s` shows them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.auth import mint_token
from tests import prometheus_server, receivers
from tests.e2e import fuzz_hooks
from tests.e2e.stack import JWT_SECRET, REPO, Stack
from tests.processes import die_with_parent

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROLES = ("admin", "operator", "viewer")
#: fixed, so a failure reproduces; FUZZ_SEED explores other cases (`FUZZ_SEED=7 pytest -s …`)
SEED = int(os.environ.get("FUZZ_SEED", "20261206"))
#: each role's time budget: the three runs stay within 3 minutes with the runtime's start
SECONDS_PER_ROLE = 45
#: cases per operation and phase before the budget is spent
MAX_EXAMPLES = 25
FUZZ_NODE = "fuzz-node-1"
#: the node positive cases select by label (fuzz_hooks.FUZZ_NODE_LABELS)
FUZZ_POOL_NODE = "fuzz-pool-1"
#: the Harbor positive cases sync from (nothing answers there: the syncs fail, as they may)
HARBOR_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = prometheus_server.start(tmp_path_factory.mktemp("prometheus"), "global:\n  scrape_interval: 15s\n")
    try:
        yield url
    finally:
        prometheus_server.stop(process)


@pytest.fixture(scope="module")
def stack_env(prometheus_url: str) -> dict[str, str]:
    # the fuzzer writes faster than any user may: the rate limit is tested elsewhere
    return {"FLEETRUN_PROMETHEUS_URL": prometheus_url, "FLEETRUN_RATE_LIMIT": "1000000",
            "FLEETRUN_HARBOR_URLS": HARBOR_URL}


@pytest.fixture(scope="module")
def receiver() -> Iterator[receivers.Receiver]:
    """Where the positive cases' notification targets point."""
    server = receivers.start()
    yield server
    server.close()


#: what positive_data_acceptance expects by default (schemathesis), and the answers that also
#: fit a schema-valid request where the outcome depends on state the schema cannot see
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429"]
_STATEFUL_ANSWERS = {
    # the same Idempotency-Key with another body (API.md, Errors: 422 idempotency_key_reused)
    "createTask": ["422"],
    # no `user` is valid only while the node is allocated (the allocation's user is reclaimed)
    "reclaimNode": ["400"],
    # a two-phase task takes no further node: a rule of the task's type, which this route's body
    # cannot name
    "dispatchTask": ["400"],
}


def _configuration(node_token: str) -> str:
    """schemathesis.toml: the hooks, the agent routes called as the fuzz node, and the answers
    that depend on state."""
    lines = [
        'hooks = "tests.e2e.fuzz_hooks"',
        "",
        "[[operations]]",
        'include-path-regex = "^/v1/(agents|runs)/"',
        f"headers = {{ Authorization = {json.dumps('Bearer ' + node_token)} }}",
        f"parameters = {{ node_id = {json.dumps(FUZZ_NODE)} }}",
    ]
    for operation_id, statuses in _STATEFUL_ANSWERS.items():
        lines += [
            "", "[[operations]]", f"include-operation-id = {json.dumps(operation_id)}",
            f"checks.positive_data_acceptance.expected-statuses = {json.dumps(_ACCEPTED + statuses)}",
        ]
    return "\n".join([*lines, ""])


def _fuzz(stack: Stack, role: str, workdir: Path, configuration: Path, receiver_url: str) -> dict[str, Any]:
    """One bounded schemathesis run as a user with `role`; its JSON report."""
    token = mint_token(f"fuzz-{role}", [role], JWT_SECRET)
    report = workdir / f"{role}.json"
    command = [
        str(Path(sys.executable).with_name("st")), "--config-file", str(configuration), "run",
        f"{stack.url}/v1/openapi.json", "--header", f"Authorization: Bearer {token}",
        "--checks", "all", "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES),
        "--max-time", str(SECONDS_PER_ROLE), "--workers", "1", "--no-color", "--generation-database", "none",
        # API Gateway answers 504 after 29 s: a slower answer is a failure in AWS
        "--request-timeout", "29", "--report", "json", "--report-json-path", str(report),
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "FUZZ_RECEIVER_URL": receiver_url,
                   "FUZZ_HARBOR_URL": HARBOR_URL}
    with (workdir / f"{role}.log").open("w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=workdir,
                       timeout=SECONDS_PER_ROLE + 60, check=False, preexec_fn=die_with_parent)
    if not report.exists():
        pytest.fail(f"schemathesis wrote no report as {role}:\n{(workdir / f'{role}.log').read_text()[-3000:]}")
    found: dict[str, Any] = json.loads(report.read_text())
    return found


def test_fuzzing_every_route_as_each_role_finds_no_failure(stack: Stack, receiver: receivers.Receiver,
                                                           tmp_path: Path) -> None:
    # GIVEN a registered node whose token the agent routes are called with
    configuration = tmp_path / "schemathesis.toml"
    configuration.write_text(_configuration(stack.register(FUZZ_NODE)))
    configuration.chmod(0o600)
    stack.register(FUZZ_POOL_NODE, labels=fuzz_hooks.FUZZ_NODE_LABELS)
    # AND a defined task type that takes any parameters, for positive cases of a type not built in
    stack.admin.post("/v1/task-types", {"name": fuzz_hooks.FUZZ_TYPE, "steps": ["run"],
                                        "parameters_schema": {"type": "object"}})

    # WHEN schemathesis runs as each role
    hook = receiver.answer("/hook")
    reports = {role: _fuzz(stack, role, tmp_path, configuration, hook) for role in ROLES}

    # THEN no check failed and nothing errored, for any role
    print()
    for role, report in reports.items():
        cases = report["test_cases"]
        operations = report["operations"]
        print(f"schemathesis as {role}: {cases['generated']} cases over {operations['tested']} operations, "
              f"{len(report['failures'])} failures, {len(report['errors'])} errors")
    problems = {
        role: {"failures": report["failures"], "errors": report["errors"]}
        for role, report in reports.items() if report["failures"] or report["errors"]
    }
    logs = "\n".join((tmp_path / f"{role}.log").read_text()[-4000:] for role in problems)
    assert not problems, json.dumps(problems, indent=1)[:6000] + "\n" + logs
    assert all(report["operations"]["tested"] == report["operations"]["selected"] for report in reports.values())
