"""The setting every part of `bench/scale.py` runs in: moto in-process under the strict fidelity
layer (sharded, replayed and reordered stream batches, throttles, transaction conflicts, the
per-partition write meter), the real `app.py` driven by `tests.harness.Fleet`, as the
integration tests run it."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def bootstrap() -> None:
    """Make the repository importable (bench/ itself off the path) and never talk to real AWS."""
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.harness import MOTO_ENV

    for key in [k for k in os.environ if k.startswith("AWS_")
                or (k.startswith("FLEETRUN_") and not k.startswith("FLEETRUN_FIDELITY"))]:
        del os.environ[key]
    # registering thousands of nodes is thousands of admin writes a minute, and a node that has
    # waited for its turn through a long scenario is not offline
    os.environ.update({**MOTO_ENV, "FLEETRUN_RATE_LIMIT": "100000000", "FLEETRUN_NODE_OFFLINE_SECONDS": str(10**8)})
    # the stream reaches the handlers in batches of up to the event source's BatchSize (app.py),
    # not the test suite's 100, unless a run asks otherwise
    from chalicelib.resources import STREAM_BATCH_SIZE

    os.environ.setdefault("FLEETRUN_FIDELITY_MAX_BATCH", str(STREAM_BATCH_SIZE))


@contextlib.contextmanager
def strict_fleet(seed: int | None = None) -> Iterator[Any]:
    """A fresh moto with every fleetrun resource under the strict fidelity layer, and a Fleet on it."""
    from moto import mock_aws

    from fleetrun.local import fidelity, moto_fixes
    from fleetrun.local.fidelity import dynamo
    from fleetrun.local.provision import provision
    from tests.harness import Fleet, reset_caches

    moto_fixes.apply()
    dynamo.apply()
    if seed is not None:
        os.environ["FLEETRUN_FIDELITY_SEED"] = str(seed)
    installed = fidelity.Fidelity.from_env(default_mode="strict")
    if installed.strict:
        # as in the tests: botocore waits rand(0, 1 s) before retrying a throttle, here rand(0, 25 ms)
        # (a throttle's cost is counted in requests; this machine's wall time is not the figure)
        from botocore.retries.standard import ExponentialBackoff

        ExponentialBackoff._DEFAULT_BACKOFF_CONFIG["throttling_base_scale"] = 0.025
    note(f"fidelity {installed.mode}, seed {installed.seed} (replay with FLEETRUN_FIDELITY_SEED={installed.seed})")
    previous = fidelity.install(installed)
    try:
        with mock_aws():
            reset_caches()
            provisioned = provision()
            os.environ.update(provisioned.environment())
            reset_caches()
            yield Fleet(provisioned)
            reset_caches()
    finally:
        fidelity.install(previous)


def note(message: str) -> None:
    """Progress goes to stderr: stdout carries the figures (and, with --json, only the JSON)."""
    print(message, file=sys.stderr, flush=True)
