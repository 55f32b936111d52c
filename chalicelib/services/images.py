"""The image catalog's entry points: list it, start a sync (route, schedule, Harbor webhook).

A sync always runs as an `images.sync` task, so it is visible, retryable and counted like
any other work. The route and the schedule take Harbor's URL and robot account from the
deployment's settings; the secret is sealed into the task like any secret parameter.
"""

from __future__ import annotations

import hmac
from typing import Any, Final

from chalicelib import clock, config
from chalicelib.errors import NotConfigured, Unauthenticated, ValidationFailed
from chalicelib.observability import logger
from chalicelib.services import submit
from chalicelib.services.submit import Submitted
from chalicelib.store import images, pages
from chalicelib.store.models import ImageItem

TASK_TYPE: Final = "images.sync"
#: owner of the tasks the daily schedule and Harbor's webhook create
SCHEDULE_OWNER: Final = "scheduler"
HOOK_OWNER: Final = "harbor-webhook"
#: Harbor events after which one repository is synced again
HOOK_EVENTS: Final = frozenset({"PUSH_ARTIFACT", "DELETE_ARTIFACT"})


def image_view(item: ImageItem) -> dict[str, Any]:
    return {
        "project": item.project,
        "repository": item.repository,
        "tag": item.tag,
        "digest": item.digest,
        "size_bytes": int(item.size_bytes),
        "pushed_at": item.pushed_at,
        "synced_at": item.synced_at,
        "removed_at": item.removed_at,
    }


def list_images(query: dict[str, str], limit: int, cursor: str | None) -> dict[str, Any]:
    """A page of the catalog, by repository and tag; removed tags only with `include_removed=true`."""
    include_removed = query.get("include_removed", "false")
    if include_removed not in ("true", "false"):
        raise ValidationFailed("invalid query parameter include_removed",
                               [{"path": "$query.include_removed", "message": "must be true or false"}])
    project = query.get("project") or None
    start = _start_key(cursor, project) if cursor else None
    found, last = images.page(project, include_removed == "true", limit, start)
    return pages.page((image_view(i) for i in found), last)


def _start_key(cursor: str, project: str | None) -> dict[str, Any]:
    """A cursor only continues the listing it came from (same project, or all projects)."""
    key = pages.decode_cursor(cursor)
    expected = {"pk", "sk"} if project else {"pk", "sk", "list_pk", "list_sk"}
    same = set(key) == expected and (not project or key["pk"] == {"S": images.image_pk(project)})
    if not same:
        raise ValidationFailed("invalid query parameter cursor", [
            {"path": "$query.cursor", "message": "not a cursor of this listing; start over without it"}])
    return key


def request_sync(owner: str, project: str | None = None, repository: str | None = None,
                 idempotency_key: str | None = None) -> Submitted:
    """Create an `images.sync` task against the configured Harbor. Raises NotConfigured."""
    if not config.harbor_url():
        raise NotConfigured("Harbor is not configured: set FLEETRUN_HARBOR_URL (and FLEETRUN_HARBOR_ROBOT_NAME "
                            "with FLEETRUN_HARBOR_ROBOT_SECRET or FLEETRUN_HARBOR_ROBOT_SECRET_ARN)")
    parameters: dict[str, Any] = {"harbor_url": config.harbor_url()}
    if config.harbor_robot_name():
        parameters.update(robot_name=config.harbor_robot_name(), robot_secret=config.harbor_robot_secret())
    if repository:
        parameters["repository"] = repository
    elif project:
        parameters["project"] = project
    scope = repository or project or "all projects"
    body = {"type": TASK_TYPE, "name": f"sync Harbor images: {scope}", "parameters": parameters, "tags": ["images"]}
    return submit.submit(owner, body, idempotency_key)


def scheduled_sync(now: float | None = None) -> Submitted | None:
    """The daily sync: one task per day (a repeated firing answers with that day's task)."""
    if not config.harbor_url():
        logger.info("daily image sync skipped: Harbor is not configured")
        return None
    day = clock.rfc3339(clock.now_epoch() if now is None else now)[:10]
    return request_sync(SCHEDULE_OWNER, idempotency_key=f"images-sync-{day}")


def authenticate_hook(authorization: str | None) -> None:
    """Harbor sends its webhook policy's auth header verbatim as `Authorization`; it must equal
    FLEETRUN_HARBOR_WEBHOOK_SECRET (compared in constant time). Raises Unauthenticated, or
    NotConfigured when a caller presents a secret but the receiver has none."""
    if not authorization:
        raise Unauthenticated("the Harbor webhook needs the shared secret as its Authorization header")
    secret = config.harbor_webhook_secret()
    if not secret:
        raise NotConfigured("the Harbor webhook receiver is off: set FLEETRUN_HARBOR_WEBHOOK_SECRET")
    if not hmac.compare_digest(authorization.encode(), secret.encode()):
        raise Unauthenticated("the Harbor webhook auth header does not match")


def harbor_hook(body: dict[str, Any]) -> Submitted | None:
    """An authenticated Harbor event: a pushed (or deleted) artifact syncs its repository again;
    other events are accepted and ignored (None)."""
    if body.get("type") not in HOOK_EVENTS:
        return None
    repository = _hook_repository(body)
    digests = sorted(str(r.get("digest", "")) for r in body["event_data"].get("resources") or [])
    # a redelivered webhook (same event, same artifact) creates no second task
    key = f"harbor-{body['type']}-{repository}-{body.get('occur_at', '')}-{'.'.join(digests)}"[:128]
    return request_sync(HOOK_OWNER, repository=repository, idempotency_key=key)


def _hook_repository(body: dict[str, Any]) -> str:
    repository = (body.get("event_data") or {}).get("repository") or {}
    full = repository.get("repo_full_name") or ""
    if not full and repository.get("namespace") and repository.get("name"):
        full = f"{repository['namespace']}/{repository['name']}"
    if not isinstance(full, str) or "/" not in full:
        raise ValidationFailed("the Harbor event names no repository", [
            {"path": "$.event_data.repository.repo_full_name", "message": "required: project/repository"},
        ])
    return full
