"""Following a task over the WebSocket API (API.md "Real time"), polling when it is not there.

Where to connect: `FLEETRUN_WS_URL` when set (`off` forces polling), else the `websocket_url`
that `GET /v1/health` advertises (the local runtime and a deployment with a WebSocket API do).
After subscribing, one REST read gives the starting state, so nothing that happened between
the last read and the subscription is missed; then pushes drive the view. Pushes are best
effort: after `QUIET_SECONDS` without one, a REST read catches up; a lost connection falls
back to polling from where it was. Which way it follows is said on stderr.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import urlencode

from fleetrun.cli_watch import TERMINAL, Snapshot, is_done, poll
from fleetrun.client import Api

QUIET_SECONDS = 10.0
#: how long a pushed event waits for one written before it that another stream shard brings
REORDER_SECONDS = 1.0
#: node runs (the per-node bars) are re-read at most this often while pushes arrive
RUNS_EVERY_SECONDS = 1.0
_OPEN_TIMEOUT_SECONDS = 5.0
_POLL_SECONDS = 1.0


def websocket_url(api: Api) -> str | None:
    configured = os.environ.get("FLEETRUN_WS_URL", "").strip()
    if configured:
        return None if configured.lower() in ("off", "poll", "0") else configured
    try:
        advertised = api.get("/v1/health").get("websocket_url")
    except Exception:
        return None
    return advertised if isinstance(advertised, str) and advertised else None


def _notice(line: str) -> None:
    print(f"fleetrun: {line}", file=sys.stderr, flush=True)


def _connection_errors() -> tuple[type[BaseException], ...]:
    from websockets.exceptions import WebSocketException

    return (OSError, ValueError, WebSocketException)


class Subscription:
    """One connection subscribed to one topic (a task id or `*`). Raises on failure to subscribe."""

    def __init__(self, url: str, token: str | None, topic: str) -> None:
        from websockets.sync.client import connect

        target = f"{url}{'&' if '?' in url else '?'}{urlencode({'token': token or ''})}"
        self._exit = ExitStack()
        self.socket = self._exit.enter_context(connect(target, open_timeout=_OPEN_TIMEOUT_SECONDS, max_size=2**20))
        try:
            self.socket.send(json.dumps({"action": "subscribe", "task_id": topic}))
            while True:  # pushes racing the answer are dropped: the REST read that follows covers them
                message = self.receive(_OPEN_TIMEOUT_SECONDS)
                if message is None:
                    raise TimeoutError("no answer to subscribe")
                if message.get("type") == "error":
                    raise ConnectionError(message.get("error", {}).get("message", "subscribe refused"))
                if message.get("type") == "subscribed":
                    return
        except BaseException:
            self.close()
            raise

    def receive(self, timeout: float) -> dict[str, Any] | None:
        """The next message; None when nothing came within `timeout` seconds."""
        try:
            raw = self.socket.recv(timeout=timeout)
        except TimeoutError:
            return None
        decoded = json.loads(raw)
        return decoded if isinstance(decoded, dict) else {}

    def close(self) -> None:
        self._exit.close()


def subscribe(api: Api, topic: str) -> Subscription | None:
    """A subscription, or None (said on stderr) when the WebSocket API cannot be used."""
    url = websocket_url(api)
    if url is None:
        return None
    try:
        import websockets  # noqa: F401  (the client runs without it, polling)
    except ImportError:
        _notice("the `websockets` package is not installed; polling every second")
        return None
    try:
        subscription = Subscription(url, api.token, topic)
    except Exception as error:  # refused, unreachable, timed out: polling still works
        _notice(f"WebSocket {url} unavailable ({error.__class__.__name__}: {error}); polling every second")
        return None
    _notice(f"following live over {url}")
    return subscription


# --- watch ----------------------------------------------------------------------------------
def follow(api: Api, task_id: str, after: str | None = None) -> Iterator[Snapshot]:
    """A `cli_watch.Source`: snapshots driven by pushes (polling without the WebSocket API)."""
    subscription = subscribe(api, task_id)
    if subscription is None:
        yield from poll(api, task_id, after)
        return
    state = _Watched(api, task_id, after)
    try:
        yield from state.pushed(subscription)
        return
    except _connection_errors() as error:
        _notice(f"WebSocket lost ({error.__class__.__name__}); polling every second")
    finally:
        subscription.close()
    yield from poll(api, task_id, state.cursor)


class _Watched:
    def __init__(self, api: Api, task_id: str, after: str | None) -> None:
        self.api, self.task_id, self.after, self.cursor = api, task_id, after, after
        self.seen: set[str] = set()
        self.task: dict[str, Any] = {}
        self.runs: list[dict[str, Any]] = []
        self.runs_read_at = 0.0

    def pushed(self, subscription: Subscription) -> Iterator[Snapshot]:
        yield Snapshot(self.read_task(), self.read_runs(), self.read_events())
        runs_stale = False
        while not is_done(self.task):
            message = subscription.receive(RUNS_EVERY_SECONDS if runs_stale else QUIET_SECONDS)
            events: list[dict[str, Any]] = []
            changed = False
            if message is None and not runs_stale:  # quiet: catch up on anything a lost push held
                self.read_task()
                events, runs_stale, changed = self.read_events(), True, True
            elif message is not None and message.get("type") == "task" and message["task"]["task_id"] == self.task_id:
                if _older(message["task"], self.task):  # the subscription's answer, or a push delivered again
                    continue
                self.task, runs_stale, changed = message["task"], True, True
                if is_done(self.task):  # its events may sit in the next stream batch: read them now
                    events = self.read_events()
            elif message is not None and message.get("type") == "event" and message.get("task_id") == self.task_id:
                events = self.new([message["event"]])
            if runs_stale and (is_done(self.task) or time.monotonic() - self.runs_read_at >= RUNS_EVERY_SECONDS):
                self.read_runs()
                runs_stale, changed = False, True
            if events or changed:
                yield Snapshot(self.task, self.runs, events)

    def read_task(self) -> dict[str, Any]:
        self.task = self.api.get(f"/v1/tasks/{self.task_id}")
        return self.task

    def read_runs(self) -> list[dict[str, Any]]:
        self.runs, self.runs_read_at = self.api.pages(f"/v1/tasks/{self.task_id}/nodes"), time.monotonic()
        return self.runs

    def read_events(self) -> list[dict[str, Any]]:
        return self.new(self.api.pages(f"/v1/tasks/{self.task_id}/events", after=self.cursor))

    def read_missed(self) -> list[dict[str, Any]]:
        """Every event of the log from the caller's starting point not shown yet (one pushed late
        can sort before the cursor)."""
        return self.new(self.api.pages(f"/v1/tasks/{self.task_id}/events", after=self.after))

    def new(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Events not shown yet and after the caller's starting point; the cursor moves past them."""
        fresh = [e for e in events
                 if e["event_id"] not in self.seen and (self.after is None or e["event_id"] > self.after)]
        self.seen.update(e["event_id"] for e in fresh)
        if fresh:
            self.cursor = max([self.cursor or "", *(e["event_id"] for e in fresh)])
        return fresh


def _older(pushed: dict[str, Any], shown: dict[str, Any]) -> bool:
    """By `revision` (API.md: counts and progress move it too); by `updated_at` without one."""
    if isinstance(pushed.get("revision"), int) and isinstance(shown.get("revision"), int):
        return bool(pushed["revision"] < shown["revision"])
    return str(pushed.get("updated_at") or "") < str(shown.get("updated_at") or "")


# --- events --follow ------------------------------------------------------------------------
def follow_events(api: Api, task_id: str, after: str | None) -> Iterator[list[dict[str, Any]]]:
    """New events of a task, oldest first, until the task is terminal (`events --follow`)."""
    state = _Watched(api, task_id, after)
    subscription = subscribe(api, task_id)
    if subscription is not None:
        try:
            yield from _pushed_events(state, subscription)
            return
        except _connection_errors() as error:
            _notice(f"WebSocket lost ({error.__class__.__name__}); polling every second")
        finally:
            subscription.close()
    while True:
        started = time.monotonic()
        status = state.read_task()["status"]
        yield state.read_events()
        if status in TERMINAL:  # events were read after the status: nothing older is missed
            return
        time.sleep(max(0.0, _POLL_SECONDS - (time.monotonic() - started)))


def _pushed_events(state: _Watched, subscription: Subscription) -> Iterator[list[dict[str, Any]]]:
    """Pushed events are held for REORDER_SECONDS and printed in id order: a task's event items
    come on several stream shards, so one written earlier can be pushed a moment later. At the
    task's end, what the log holds and was not printed comes with the last held ones, in order."""
    while True:
        status = state.read_task()["status"]
        yield state.read_events()
        if status in TERMINAL:
            return
        held: list[dict[str, Any]] = []
        held_since = 0.0
        while True:  # until quiet (read again) or the task ends
            timeout = QUIET_SECONDS if not held else held_since + REORDER_SECONDS - time.monotonic()
            message = subscription.receive(timeout) if timeout > 0 else None
            if message is None:
                if not held:
                    break
                yield _in_order(held)
                held = []
                continue
            if message.get("type") == "event" and message.get("task_id") == state.task_id:
                fresh = state.new([message["event"]])
                if fresh and not held:
                    held_since = time.monotonic()
                held.extend(fresh)
            elif (message.get("type") == "task" and message["task"].get("status") in TERMINAL
                  and not _older(message["task"], state.task)):
                yield _in_order(held + state.read_missed())
                return


def _in_order(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(events, key=lambda event: str(event["event_id"]))
