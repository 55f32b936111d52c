"""Sync Harbor into the image catalog: insert new tags, update changed digests and sizes,
mark removed the tags Harbor no longer has.

Upserts happen as each repository is read. Removals happen only after every page of the
scope was read: a listing cut short by an error must never make tags look deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

from chalicelib import clock, config
from chalicelib.errors import HarborError
from chalicelib.executors.base import Lease, Outcome
from chalicelib.executors.harbor import HarborClient, HarborSettings
from chalicelib.services import harbor_sources
from chalicelib.store import images
from chalicelib.store.images import Upsert


@dataclass(frozen=True)
class SyncScope:
    """The whole registry, one project, or one repository (`project/repo`)."""

    project: str | None = None
    repository: str | None = None

    def describe(self) -> str:
        if self.repository:
            return f"repository {self.repository}"
        return f"project {self.project}" if self.project else "all projects"


@dataclass
class SyncCounts:
    projects: int = 0
    repositories: int = 0
    artifacts: int = 0
    tags: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        return (f"{self.projects} project(s), {self.repositories} repositories, {self.artifacts} artifacts "
                f"({self.tags} tags): {self.inserted} inserted, {self.updated} updated, {self.removed} removed")


#: artifacts between two progress calls inside one repository
TICK_ARTIFACTS = 100
#: called after each repository (and every TICK_ARTIFACTS artifacts) with
#: (projects done, projects in scope, counts so far)
Progress = Callable[[int, int, SyncCounts], None]


def sync(client: HarborClient, scope: SyncScope, counts: SyncCounts, on_progress: Progress | None = None) -> None:
    """Read the scope from Harbor and bring the catalog in line, counting into `counts`.
    Raises HarborError when Harbor cannot be read: what was upserted until then stays (and is
    counted), nothing is marked removed."""
    existing = images.load(scope.project, scope.repository)
    seen: set[tuple[str, str]] = set()
    projects = _projects(client, scope)
    report: Progress = on_progress or _ignore
    for done, project in enumerate(projects, start=1):
        repositories = [scope.repository] if scope.repository else list(client.repositories(project))
        tick = partial(report, done - 1, len(projects), counts)
        for repository in repositories:
            _sync_repository(client, repository, existing, seen, counts, tick)
            tick()
        counts.projects += 1
        report(done, len(projects), counts)
    now = clock.now_iso()
    for key, item in existing.items():
        if key not in seen and item.removed_at is None and images.mark_removed(item, now):
            counts.removed += 1


def _ignore(done: int, total: int, counts: SyncCounts) -> None:
    pass


def _projects(client: HarborClient, scope: SyncScope) -> list[str]:
    if scope.repository:
        return [images.project_of(scope.repository)]
    if scope.project:
        return [scope.project]
    return list(client.projects())


def _sync_repository(client: HarborClient, repository: str, existing: dict[tuple[str, str], Any],
                     seen: set[tuple[str, str]], counts: SyncCounts, tick: Callable[[], None]) -> None:
    now = clock.now_iso()
    for _, tagged in client.artifacts(repository):
        counts.artifacts += 1
        if counts.artifacts % TICK_ARTIFACTS == 0:
            tick()  # a huge repository keeps the lease alive too
        for tag in tagged:
            key = (tag.repository, tag.tag)
            if key in seen:
                continue  # Harbor lists each tag once; a tag moved between pages counts once
            seen.add(key)
            counts.tags += 1
            outcome = images.upsert(tag, existing.get(key), now)
            if outcome is Upsert.INSERTED:
                counts.inserted += 1
            elif outcome is Upsert.UPDATED:
                counts.updated += 1
            else:
                counts.unchanged += 1
    counts.repositories += 1


# --- the executor of `images.sync` runs (services/work.py) ---------------------------------
def execute(parameters: dict[str, Any], lease: Lease) -> Outcome:
    """Run one `images.sync`: Harbor errors fail the run with their message; counts are events.
    A Harbor outside the allow-list (changed since the task was created) fails it unread."""
    if not harbor_sources.allowed(parameters["harbor_url"]):
        return Outcome("failed", harbor_sources.REFUSED,
                       events=[{"type": "error", "step": STEP, "message": harbor_sources.REFUSED, "progress": None}])
    settings = HarborSettings(
        url=parameters["harbor_url"], username=parameters.get("robot_name") or None,
        password=parameters.get("robot_secret"), page_size=config.harbor_page_size(),
        backoff_seconds=config.harbor_retry_backoff_seconds(),
    )
    scope = SyncScope(parameters.get("project") or None, parameters.get("repository") or None)
    lease.event("info", f"syncing {scope.describe()} from {settings.url}", {"scope": scope.describe()})
    counts = SyncCounts()

    def progress(done: int, total: int, _: SyncCounts) -> None:
        lease.progress(int(99 * done / total) if total else 0, STEP)

    try:
        sync(HarborClient(settings), scope, counts, progress)
    except HarborError as error:
        message = f"{error}; {counts.summary()} before it stopped, nothing marked removed"
        return Outcome("failed", str(error), events=[_event("error", message, counts)])
    return Outcome("succeeded", output=counts.summary(), events=[_event("success", counts.summary(), counts)])


STEP = "sync"


def _event(type_: str, message: str, counts: SyncCounts) -> dict[str, Any]:
    return {"type": type_, "step": STEP, "message": message, "progress": 100 if type_ == "success" else None,
            "data": counts.as_dict()}
