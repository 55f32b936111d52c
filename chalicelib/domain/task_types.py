"""The registry of task types: steps, parameter schema, secrets, defaults, executor."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from chalicelib.errors import UnknownTaskType, ValidationFailed

AGENT: Final = "agent"
SERVICE: Final = "service"

_NODE_ID = {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}
#: a secret value shorter than this cannot be masked safely in what agents send back: submit
#: refuses it (every value inside a secret object or list too), and the schemas say so
SHORTEST_SECRET: Final = 4


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    steps: tuple[str, ...]
    parameters_schema: dict[str, Any]
    secret_parameters: frozenset[str] = frozenset()
    requires_confirmation: bool = False
    default_max_concurrency: int = 50
    max_attempts: int = 3
    executor: str = AGENT
    #: steps of the second phase for two-phase types
    apply_steps: tuple[str, ...] = ()
    #: how long a planned task waits for `confirm` before the sweeper discards it (None: the
    #: service-wide FLEETRUN_CONFIRMATION_WINDOW_SECONDS, default 24 h)
    confirmation_window_seconds: int | None = None
    #: the parameter whose value is the task's `concurrency_key` when the request gives none
    concurrency_key_parameter: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the version a task is pinned to (`type_version`); built-ins are always version 1
    version: int = 1
    #: part of the service (this registry), not defined through `/v1/task-types`
    builtin: bool = True
    #: how long the agent lets a run's steps take in all; None: the agent's default per step
    run_timeout_seconds: int | None = None

    @property
    def agent_executed(self) -> bool:
        return self.executor == AGENT

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "builtin": self.builtin,
            "steps": list(self.steps),
            "apply_steps": list(self.apply_steps),
            "parameters_schema": self.parameters_schema,
            "secret_parameters": sorted(self.secret_parameters),
            "requires_confirmation": self.requires_confirmation,
            "default_max_concurrency": self.default_max_concurrency,
            "max_attempts": self.max_attempts,
            "executor": self.executor,
            "run_timeout_seconds": self.run_timeout_seconds,
        }

    def definition(self) -> dict[str, Any]:
        """What `POST /v1/task-types` would take to define this type (a defined type's stored form)."""
        described = self.describe()
        for derived in ("version", "builtin", "executor"):
            del described[derived]
        return described

    def steps_of(self, phase: str) -> tuple[str, ...]:
        return self.apply_steps if phase == "apply" else self.steps

    @property
    def first_phase(self) -> str:
        return "plan" if self.requires_confirmation else "run"


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_TYPES = (
    TaskType(
        name="shell",
        description="Run a command on each node's agent, like a fleet-wide run command.",
        steps=("run",),
        parameters_schema=_object(
            {
                "command": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 256},
                "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 600},
            },
            ["command"],
        ),
        default_max_concurrency=100,
    ),
    TaskType(
        name="slurm.scale_up",
        description="Add hosts to a SLURM cluster: deploy a Salt minion, register the node, scale the partition.",
        steps=("deploy-minion", "register-node", "slurm-scale"),
        parameters_schema=_object(
            {
                "ssh_user": {"type": "string", "minLength": 1, "maxLength": 64},
                "ssh_port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 22},
                "password": {"type": "string", "minLength": SHORTEST_SECRET, "maxLength": 1024},
                "salt_master": {"type": "string", "minLength": 1, "maxLength": 253},
                "apphub_url": {"type": "string", "maxLength": 2048},
                "partition": {"type": "string", "minLength": 1, "maxLength": 128},
            },
            ["ssh_user", "salt_master", "partition"],
        ),
        secret_parameters=frozenset({"password"}),
        default_max_concurrency=20,
    ),
    TaskType(
        name="config.release",
        description="Push a CDN config release to edge nodes.",
        steps=("apply_config",),
        parameters_schema=_object(
            {
                "website_id": {"type": "integer", "minimum": 1},
                "origin_set_id": {"type": "integer", "minimum": 1},
                "config_version": {"type": "string", "maxLength": 128},
            },
            ["website_id"],
        ),
        default_max_concurrency=50,
    ),
    TaskType(
        name="iac.plan_apply",
        description=(
            "Plan infrastructure as code, wait for a human to confirm, then apply on the runner that holds the plan."
        ),
        steps=("plan",),
        apply_steps=("apply",),
        parameters_schema=_object(
            {
                "workspace": {"type": "string", "pattern": "^[A-Za-z0-9._/-]{1,128}$"},
                "source": {"type": "string", "minLength": 1, "maxLength": 2048},
                "variables": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                "secret_variables": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "minLength": SHORTEST_SECRET},
                },
            },
            ["workspace", "source"],
        ),
        secret_parameters=frozenset({"secret_variables"}),
        requires_confirmation=True,
        concurrency_key_parameter="workspace",
        default_max_concurrency=1,
        max_attempts=2,
    ),
    TaskType(
        name="machine.reclaim",
        description="Reclaim a machine from a user: stop processes, clean home, remove containers, reset SSH keys.",
        steps=("stop-processes", "clean-home", "remove-containers", "reset-ssh-keys"),
        parameters_schema=_object({"user": {"type": "string", "pattern": "^[a-z_][a-z0-9_-]{0,31}$"}}, ["user"]),
        default_max_concurrency=10,
    ),
    TaskType(
        name="images.sync",
        description=(
            "Sync Harbor v2 projects, repositories and artifacts into the image catalog (runs inside the service)."
        ),
        steps=("sync",),
        parameters_schema=_object(
            {
                "harbor_url": {"type": "string", "pattern": "^https?://", "maxLength": 2048},
                "project": {"type": "string", "maxLength": 255},
                "repository": {"type": "string", "pattern": "^[^/]+/.+$", "maxLength": 255},
                "robot_name": {"type": "string", "maxLength": 255},
                "robot_secret": {"type": "string", "minLength": SHORTEST_SECRET, "maxLength": 1024},
            },
            ["harbor_url"],
        ),
        secret_parameters=frozenset({"robot_secret"}),
        default_max_concurrency=1,
        executor=SERVICE,
    ),
)

REGISTRY: Final[dict[str, TaskType]] = {t.name: t for t in _TYPES}

#: the single run of a service-executed task
SERVICE_NODE: Final = "service"


def refuse_service_node(nodes: Iterable[str | None], path: str) -> None:
    """Raises ValidationFailed when `nodes` (ids given for agents: a node to register, targets, a
    runner) name SERVICE_NODE. That id is the runner of every service-executed run: a node of that
    name would claim those runs, and be handed their secrets."""
    if SERVICE_NODE in nodes:
        raise ValidationFailed(
            f"node id {SERVICE_NODE!r} is reserved for the runs the service executes itself; use another id",
            [{"path": path, "message": f"{SERVICE_NODE!r} is a reserved node id"}],
        )


def get_task_type(name: str) -> TaskType:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownTaskType(name, REGISTRY) from None
