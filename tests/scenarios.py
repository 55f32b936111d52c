"""Task bodies the integration modules share, and the nodes they target."""

from __future__ import annotations

from typing import Any

#: the target nodes of `shell()`
NODES = ["n1", "n2", "n3"]
#: the node that plans and applies `iac()` tasks
RUNNER = "tf-a"


def shell(nodes: list[str] = NODES, **extra: Any) -> dict[str, Any]:
    """A `shell` task on `nodes` (every node's run only needs to be claimed and finished)."""
    return {"type": "shell", "name": "patch", "target_nodes": nodes, "parameters": {"command": ["patch"]}, **extra}


def iac(workspace: str = "prod", **extra: Any) -> dict[str, Any]:
    """A two-phase `iac.plan_apply` task on RUNNER."""
    return {"type": "iac.plan_apply", "target_nodes": [RUNNER],
            "parameters": {"workspace": workspace, "source": "git::infra", "secret_variables": {"token": "s3cr3t"}},
            **extra}
