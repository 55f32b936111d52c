"""Small readers of a synthesized CloudFormation template (parsed JSON)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

IDENTITY_POLICY_TYPES = ("AWS::IAM::Role", "AWS::IAM::ManagedPolicy", "AWS::IAM::Policy")


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def target(ref: Any) -> str | None:
    """The logical id a `Ref` / `Fn::GetAtt` points at."""
    if isinstance(ref, dict):
        if "Ref" in ref:
            return str(ref["Ref"])
        if "Fn::GetAtt" in ref:
            return str(ref["Fn::GetAtt"][0])
    return None


def mentions(value: Any) -> set[str]:
    """Every logical id referenced anywhere inside `value` (Ref, GetAtt, Sub variables)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if (single := target(value)) is not None:
            found.add(single)
        for key, inner in value.items():
            if key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                found.update(part.split("}")[0].split(".")[0] for part in str(text).split("${")[1:])
            found |= mentions(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= mentions(inner)
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def identity_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner logical id, statement) of every identity policy: role inline policies, managed and
    standalone policies."""
    for kind in IDENTITY_POLICY_TYPES:
        for logical_id, resource in resources(template, kind).items():
            props = resource["Properties"]
            documents = [p["PolicyDocument"] for p in props.get("Policies", [])]
            if "PolicyDocument" in props:
                documents.append(props["PolicyDocument"])
            for document in documents:
                for statement in as_list(document["Statement"]):
                    yield logical_id, statement


def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources(template, "AWS::Serverless::Function")


def events(template: dict[str, Any], kind: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(function, event name, event properties) of every SAM event of `kind` (SQS, DynamoDB, ...)."""
    for name, fn in functions(template).items():
        for event_name, event in fn["Properties"].get("Events", {}).items():
            if event["Type"] == kind:
                yield name, event_name, event["Properties"]


def queue_ids(template: dict[str, Any]) -> dict[str, str]:
    """Queue name without its stage suffix -> logical id."""
    found = {}
    for logical_id, queue in resources(template, "AWS::SQS::Queue").items():
        name = queue["Properties"]["QueueName"]
        found[name.rsplit("-", 1)[0]] = logical_id
    return found
