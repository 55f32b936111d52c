"""The image catalog through the local runtime (`make run`): the work-queue worker runs the
sync against a real Harbor-like HTTP server; the `fleetrun images` CLI and the webhook over HTTP."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
import requests

from tests.e2e.stack import Stack, fleetrun
from tests.harbor_server import Artifact, HarborServer
from tests.processes import clean_environment

ROBOT, SECRET, HOOK_SECRET = "robot$e2e", "e2e-robot-secret", "e2e-hook-secret"


@pytest.fixture(scope="module")
def harbor() -> Iterator[HarborServer]:
    with HarborServer(ROBOT, SECRET) as server:
        server.put("library/nginx", Artifact("sha256:n1", 1000, ["1.25", "latest"]),
                   Artifact("sha256:n2", 900, ["1.24"]))
        server.put("team/tools/builder", Artifact("sha256:b1", 3000, ["v1"]))
        yield server


@pytest.fixture(scope="module")
def stack_env(harbor: HarborServer) -> dict[str, str]:
    return {
        "FLEETRUN_HARBOR_URL": harbor.url, "FLEETRUN_HARBOR_ROBOT_NAME": ROBOT,
        "FLEETRUN_HARBOR_ROBOT_SECRET": SECRET, "FLEETRUN_HARBOR_WEBHOOK_SECRET": HOOK_SECRET,
        "FLEETRUN_HARBOR_PAGE_SIZE": "1", "FLEETRUN_HARBOR_RETRY_BACKOFF_SECONDS": "0.05",
    }


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_environment(FLEETRUN_URL=stack.url, FLEETRUN_TOKEN=stack.admin_token)
    return fleetrun(*args, env=env, timeout=60)


def test_cli_syncs_and_lists_the_catalog(stack: Stack, harbor: HarborServer):
    # WHEN an admin syncs with the CLI and waits
    synced = cli(stack, "images", "sync", "--watch")

    # THEN the task completed through the work queue and the catalog lists every tag
    assert synced.returncode == 0, synced.stdout + synced.stderr
    listed = cli(stack, "images", "--json")
    assert listed.returncode == 0, listed.stderr
    names = sorted(f"{i['repository']}:{i['tag']}" for i in json.loads(listed.stdout)["items"])
    assert names == ["library/nginx:1.24", "library/nginx:1.25", "library/nginx:latest", "team/tools/builder:v1"]
    table = cli(stack, "images", "--project", "team")
    assert "team/tools/builder" in table.stdout
    assert "library/nginx" not in table.stdout
    assert SECRET not in synced.stdout + listed.stdout


def test_webhook_push_syncs_the_repository(stack: Stack, harbor: HarborServer):
    # GIVEN a new tag pushed to Harbor
    harbor.put("library/nginx", Artifact("sha256:n1", 1000, ["1.25", "latest"]), Artifact("sha256:n3", 950, ["1.26"]))
    event = {"type": "PUSH_ARTIFACT", "occur_at": 1763800001, "operator": "ci", "event_data": {
        "resources": [{"digest": "sha256:n3", "tag": "1.26"}],
        "repository": {"name": "nginx", "namespace": "library", "repo_full_name": "library/nginx"},
    }}

    # WHEN Harbor posts its webhook
    answer = requests.post(f"{stack.url}/v1/hooks/harbor", json=event, headers={"Authorization": HOOK_SECRET},
                           timeout=10)

    # THEN the sync task completes and the catalog has the new tag, without the deleted one
    assert answer.status_code == 202, answer.text
    task = stack.wait_task(answer.json()["task_id"])
    assert task["status"] == "completed", task
    catalog = {f"{i['repository']}:{i['tag']}": i for i in stack.admin.pages("/v1/images")}
    assert catalog["library/nginx:1.26"]["digest"] == "sha256:n3"
    assert "library/nginx:1.24" not in catalog
