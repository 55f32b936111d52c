"""A real Prometheus (Debian's `prometheus`) on a free loopback port, for the tests that talk to one."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.processes import die_with_parent, free_port


def binary() -> str:
    """The `prometheus` binary; the test fails (never skips) without it."""
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if found is None:
        pytest.fail("the `prometheus` binary is missing: `make test` installs the Debian package "
                    "(or run: tools/debian-packages.sh prometheus)")
    return found


def start(workdir: Path, configuration: str) -> tuple[subprocess.Popen[bytes], str]:
    """Prometheus with `configuration` (its YAML) on a free loopback port; its log is
    `workdir/prometheus.log`. It cannot report a port it picked itself: when another process
    took the chosen one first, it exits at once and starts again on another."""
    (workdir / "prometheus.yml").write_text(configuration)
    for _ in range(3):
        port = free_port()
        with (workdir / "prometheus.log").open("w") as log:
            process = subprocess.Popen(
                [binary(), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=log, preexec_fn=die_with_parent,
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)
        if process.returncode is None or "address already in use" not in (workdir / "prometheus.log").read_text():
            return process, f"http://127.0.0.1:{port}"
    pytest.fail("Prometheus found no free port in 3 tries:\n" + (workdir / "prometheus.log").read_text()[-2000:])


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
