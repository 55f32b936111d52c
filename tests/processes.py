"""Child processes of the tests (the local runtime, agents, the `fleetrun` command, Prometheus)
and the loopback ports they listen on."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
from pathlib import Path

#: the tests' own environment (moto credentials, test secrets) must not leak into a child
_PRIVATE_PREFIXES = ("FLEETRUN_", "AWS_", "POWERTOOLS_")
#: the fidelity settings the run was started with (FLEETRUN_FIDELITY*, read before any test
#: clears FLEETRUN_*): a runtime the tests start runs strict unless they say otherwise
FIDELITY_ENV = {k: v for k, v in os.environ.items() if k.startswith("FLEETRUN_FIDELITY")}


def fidelity_environment() -> dict[str, str]:
    """FLEETRUN_FIDELITY (strict by default) and a seed, for a local runtime a test starts."""
    import random

    env = {"FLEETRUN_FIDELITY": "strict", **FIDELITY_ENV}
    env.setdefault("FLEETRUN_FIDELITY_SEED", str(random.SystemRandom().randrange(2**32)))
    return env


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def die_with_parent() -> None:
    """`preexec_fn` of a child a test starts: the kernel SIGKILLs it when the test process dies,
    even by SIGKILL (Linux PR_SET_PDEATHSIG), so no runtime, agent or server outlives a run."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without fleetrun, AWS and Powertools settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_PRIVATE_PREFIXES)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def process_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its parent to reap it no longer does)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def reap(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for a process told to stop; SIGKILL its process group if it takes longer than `timeout`."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stop(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM `process` if it still runs, then `reap` it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    reap(process, timeout)
