"""Live output: what a run's steps print, streamed to the service in ordered chunks while they run.

The pipeline per attempt: bytes → UTF-8 text (a character split by a read is joined first) →
secrets scrubbed (`SecretScrubber` holds back what could be the start of a secret) → capped
(`CappedOutput`: the first half of FLEETRUN_OUTPUT_MAX_BYTES goes out live, then only a tail
ring is kept, sent at the end after a line saying how much was cut) → sent (`LiveOutput`): the
first text at once, then at most every `interval` seconds (FLEETRUN_OUTPUT_FLUSH_SECONDS,
default 0.5) or whenever 64 KiB wait. A 10,000-line output printed over 5 s is about ten chunks.

Memory stays within the cap whatever a step prints. A failed send never blocks the run: the
text waits (within the cap) and the next tick tries again after a backoff.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import time
from collections.abc import Callable, Iterable

from fleetrun.agent.backoff import Backoff
from fleetrun.agent.journal import Journal
from fleetrun.agent.protocol import AgentApi, AgentCallFailed, ClaimedRun, OutputGap, Unavailable

#: what a secret value reads as in output (the service's mask, `chalicelib.secrets.MASK`)
MASK = "***"
#: API.md: one chunk carries at most 64 KiB
CHUNK_BYTES = 64 * 1024
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
DEFAULT_INTERVAL_SECONDS = 0.5
#: a chunk's JSON must leave the request well under the API's 256 KiB body limit (control
#: characters encode as 6 bytes each)
_JSON_BUDGET = 192 * 1024
#: chunks sent per tick at most, so a burst never holds heartbeats back for long
_CHUNKS_PER_TICK = 4
#: the last flush retries this many times
_FINAL_TRIES = 3


def cut_line(count: int) -> str:
    return f"[fleetrun: {count} bytes of output cut]\n"


def settings_from_environment() -> tuple[int, float]:
    """(FLEETRUN_OUTPUT_MAX_BYTES, FLEETRUN_OUTPUT_FLUSH_SECONDS), defaults for missing or bad values."""
    raw_max = os.environ.get("FLEETRUN_OUTPUT_MAX_BYTES", "")
    raw_interval = os.environ.get("FLEETRUN_OUTPUT_FLUSH_SECONDS", "")
    max_bytes = int(raw_max) if raw_max.isdigit() and int(raw_max) >= 1024 else DEFAULT_MAX_BYTES
    try:
        interval = min(1.0, max(0.05, float(raw_interval))) if raw_interval else DEFAULT_INTERVAL_SECONDS
    except ValueError:
        interval = DEFAULT_INTERVAL_SECONDS
    return max_bytes, interval


class SecretScrubber:
    """Replaces secret values in a stream of text, even when one arrives split across calls: the
    last (longest secret - 1) characters wait for more text or the end."""

    def __init__(self, secret_values: Iterable[str]) -> None:
        needles = sorted({value for value in secret_values if value}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, needles))) if needles else None
        self._hold = len(needles[0]) - 1 if needles else 0
        self._pending = ""

    def feed(self, text: str) -> str:
        """The scrubbed text that is safe to send now."""
        self._pending += text
        return self._take(final=False)

    def flush(self) -> str:
        """Everything still held, scrubbed (at the end of the output)."""
        return self._take(final=True)

    def _take(self, *, final: bool) -> str:
        pending = self._pending
        if self._pattern is None:
            self._pending = ""
            return pending
        cut = len(pending) if final else max(0, len(pending) - self._hold)
        for match in self._pattern.finditer(pending):
            if match.start() >= cut:
                break
            cut = max(cut, match.end())  # a secret that starts before the cut goes out whole, masked
        self._pending = pending[cut:]
        return self._pattern.sub(MASK, pending[:cut])


class CappedOutput:
    """At most `max_bytes` of an attempt's output: the head (the first half) as it comes, then a
    ring of the last half, given at the end after `cut_line`."""

    def __init__(self, max_bytes: int) -> None:
        self._head_room = max_bytes // 2
        self._tail_room = max_bytes - self._head_room
        self._tail = bytearray()
        self.cut = 0

    def add(self, text: str) -> bytes:
        """The part of `text` that still fits in the head (UTF-8; never half a character)."""
        data = text.encode()
        if len(data) <= self._head_room:
            self._head_room -= len(data)
            return data
        fits = _char_boundary(data, self._head_room)
        self._head_room = 0
        self._keep_tail(data[fits:])
        return data[:fits]

    def _keep_tail(self, data: bytes) -> None:
        self._tail += data
        excess = len(self._tail) - self._tail_room
        if excess > 0:
            del self._tail[:excess]
            self.cut += excess

    def end(self) -> bytes:
        """The tail kept after the head, after a line saying how much was cut (if anything was)."""
        start = 0
        while start < len(self._tail) and (self._tail[start] & 0xC0) == 0x80:  # half a character
            start += 1
        tail, cut = bytes(self._tail[start:]), self.cut + start
        self._tail = bytearray()
        return (cut_line(cut).encode() if cut else b"") + tail


def _char_boundary(data: bytes | bytearray, limit: int) -> int:
    """The largest index ≤ `limit` that does not split a UTF-8 character of `data`."""
    if limit >= len(data):
        return len(data)
    while limit > 0 and (data[limit] & 0xC0) == 0x80:
        limit -= 1
    return limit


class LiveOutput:
    """One attempt's live output: `append` what the steps print, `tick` often, `finish` once."""

    def __init__(self, api: AgentApi, run: ClaimedRun, journal: Journal, tag: str, *,
                 max_bytes: int | None = None, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        default_max, default_interval = settings_from_environment()
        self._api, self._run, self._journal, self._tag, self._clock = api, run, journal, tag, clock
        self._interval = default_interval if interval is None else interval
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._scrubber = SecretScrubber(run.secret_values)
        self._cap = CappedOutput(default_max if max_bytes is None else max_bytes)
        self._pending = bytearray()
        #: the offset the next chunk starts at (the service's, once it told us where output continues)
        self.offset = 0
        self._acknowledged = 0
        self._last_send = float("-inf")
        self._not_before = float("-inf")
        self._backoff = Backoff(base=0.5, cap=5.0)
        self.stopped = False

    def append(self, data: bytes) -> None:
        """What a step printed (control lines excluded)."""
        self._queue(self._scrubber.feed(self._decoder.decode(data)))

    def _queue(self, text: str) -> None:
        if text:
            self._pending += self._cap.add(text)

    def tick(self) -> None:
        """Send when a chunk is due: the first text at once, then every `interval` or at 64 KiB."""
        now = self._clock()
        if self.stopped or not self._pending or now < self._not_before:
            return
        if now - self._last_send < self._interval and len(self._pending) < CHUNK_BYTES:
            return
        for _ in range(_CHUNKS_PER_TICK):
            if not self._pending or not self._send_one():
                return
            if len(self._pending) < CHUNK_BYTES:
                return

    def finish(self) -> None:
        """At the end of the attempt: send everything held, the cut line and the tail included."""
        self._queue(self._scrubber.feed(self._decoder.decode(b"", final=True)) + self._scrubber.flush())
        self._pending += self._cap.end()
        tries = 0
        while self._pending and not self.stopped and tries < _FINAL_TRIES:
            if not self._send_one():
                tries += 1
                time.sleep(min(1.0, max(0.0, self._not_before - self._clock())))
        if self._pending and not self.stopped:
            self._journal.run(self._tag, "output", f"{len(self._pending)} bytes of live output not delivered")

    def _send_one(self) -> bool:
        """Send the next chunk; True when the service took it."""
        size = _char_boundary(self._pending, CHUNK_BYTES)
        data = bytes(self._pending[:size]).decode()
        while len(json.dumps(data)) > _JSON_BUDGET:
            size = _char_boundary(self._pending, size // 2)
            data = bytes(self._pending[:size]).decode()
        self._last_send = self._clock()
        try:
            self.offset = self._api.send_output(self._run, self.offset, data)
        except Unavailable as error:
            self._not_before = self._clock() + self._backoff.next_delay()
            self._journal.run(self._tag, "output", f"live output not sent ({error}); will retry")
            return False
        except OutputGap as gap:
            return self._continue_at(gap)
        except AgentCallFailed as error:  # lease lost, token refused, rejected: nothing more will be taken
            self._stop(f"live output stopped: {error}")
            return False
        del self._pending[:size]
        self._acknowledged += size
        self._backoff.reset()
        return True

    def _continue_at(self, gap: OutputGap) -> bool:
        # an attempt's output may already hold an earlier phase's (plan, then apply) or an earlier
        # agent process's: this stream continues after it
        if self._acknowledged == 0 and gap.expected_offset > self.offset:
            self.offset = gap.expected_offset
            return self._send_one()
        self._stop(f"live output stopped: {gap}")
        return False

    def _stop(self, message: str) -> None:
        self.stopped = True
        self._pending = bytearray()
        self._journal.run(self._tag, "output", message)
