"""The fidelity layer: AWS's harsher semantics put back on top of moto (ARCHITECTURE.md,
"The stand-in must not be kinder than AWS").

moto serialises requests, has one stream shard, never throttles, never conflicts, never times
out a Lambda and never rejects an oversized message. With `FLEETRUN_FIDELITY=strict` (the
default of the test suites; `make run` takes it from the environment) this package puts back:

- `streams`: records spread over several shards by item key, order kept per item only, shards
  delivered concurrently and interleaved, random batch sizes, whole batches replayed, and a
  switch to drop a batch;
- `dynamo`: `TransactionConflict` when a transaction and another write touch one item at the
  same time, conflicts and throttles injected at a configured rate, DynamoDB's size limits,
  and a per-partition-key write meter;
- limits elsewhere: WebSocket 128 KB (local gateway), API Gateway 29 s (local REST gateway: 504),
  each Lambda's timeout (local pumps abandon the invocation and retry the batch). moto itself
  already refuses items over 400 KB, transactions over 100 items, BatchGetItem over 100 keys and
  SQS messages over the queue's MaximumMessageSize.

Every random choice comes from a generator seeded by `FLEETRUN_FIDELITY_SEED` (a fresh seed
when unset); a failing test prints the seed, and setting it replays the same choices.
"""

from __future__ import annotations

import os
import random
import threading
import zlib
from dataclasses import dataclass, replace

OFF, STRICT = "off", "strict"


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default


@dataclass(frozen=True)
class Fidelity:
    """What the layer injects. Rates are probabilities per request (per batch for replays)."""

    mode: str = OFF
    seed: int = 0
    #: stream shards records are spread over (by item key hash)
    shards: int = 4
    #: largest stream batch handed to a handler (each batch size is drawn from 1..this)
    max_batch: int = 100
    #: probability that a delivered stream batch is delivered again, whole
    replay_rate: float = 0.0
    #: probability that a transaction is cancelled with TransactionConflict
    conflict_rate: float = 0.0
    #: probability that any DynamoDB request is throttled
    throttle_rate: float = 0.0

    @property
    def strict(self) -> bool:
        return self.mode == STRICT

    @classmethod
    def from_env(cls, default_mode: str = OFF) -> Fidelity:
        mode = os.environ.get("FLEETRUN_FIDELITY", "").strip().lower() or default_mode
        if mode not in (OFF, STRICT):
            raise ValueError(f"FLEETRUN_FIDELITY must be {OFF!r} or {STRICT!r}, not {mode!r}")
        seed = _int("FLEETRUN_FIDELITY_SEED", random.SystemRandom().randrange(2**32))
        if mode == OFF:
            return cls(mode=OFF, seed=seed)
        return cls(
            mode=STRICT, seed=seed,
            shards=_int("FLEETRUN_FIDELITY_SHARDS", 4),
            max_batch=_int("FLEETRUN_FIDELITY_MAX_BATCH", 100),
            replay_rate=_float("FLEETRUN_FIDELITY_REPLAY_RATE", 0.10),
            conflict_rate=_float("FLEETRUN_FIDELITY_CONFLICT_RATE", 0.01),
            throttle_rate=_float("FLEETRUN_FIDELITY_THROTTLE_RATE", 0.005),
        )

    def with_rates(self, **rates: float | int) -> Fidelity:
        return replace(self, **rates)  # type: ignore[arg-type]

    def rng(self, *stream: str) -> random.Random:
        """A generator of its own for one named source of choices (a shard, a request kind):
        the choices of one source do not depend on how threads interleave with the others."""
        salt = zlib.crc32("/".join(stream).encode())
        return random.Random((self.seed << 32) ^ salt)


_lock = threading.Lock()
_current = Fidelity()


def current() -> Fidelity:
    return _current


def install(fidelity: Fidelity) -> Fidelity:
    """Make `fidelity` the one the layer's parts read; returns the previous one."""
    global _current
    with _lock:
        previous, _current = _current, fidelity
    return previous
