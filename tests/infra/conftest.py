"""Synthesize the CDK app once per test session (slow: jsii and `chalice package`).

Under pytest-xdist every worker runs session fixtures, so the work happens under a file lock
in the directory the workers share, and the later workers read the first one's result.
Select these tests with `-m infra` (`make infra-test`), skip them with `-m "not infra"`.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.infra.contexts import (
    FIXTURE_AUDIENCE,
    FIXTURE_HARBOR_SECRETS,
    FIXTURE_HARBOR_URL,
    FIXTURE_ISSUER,
    NOTIFY_SENDER,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURE_APP = Path(__file__).resolve().parent / "fixture_app"
SYNTH_TIMEOUT = 900


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "infra: CDK synthesis, cfn-lint and chalice package (slow, needs Node.js)")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print what the infra tests measured (the runs' JSON results in the shared temp dir)."""
    factory = getattr(config, "_tmp_path_factory", None)
    if factory is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    shared = factory.getbasetemp() / "fleetrun-infra"
    if not shared.is_dir():
        return
    lines = []
    for name, label in (("synth-app", "synthesized dev+prod"), ("synth-fixture", "synthesized the fixture app")):
        result = _read(shared / f"{name}.json")
        if result and "seconds" in result:
            lines.append(f"{label} in {result['seconds']:.1f} s")
    package = _read(shared / "package.json")
    if package and package.get("returncode") == 0:
        lines.append(f"chalice package in {package['seconds']:.1f} s; {package['stdout'].strip().splitlines()[-1]}")
    for lint in sorted(shared.glob("lint-*.json")):
        result = _read(lint) or {}
        lines.append(f"cfn-lint {lint.stem.removeprefix('lint-')}: {result.get('errors')} errors, "
                     f"{result.get('warnings')} warnings")
    if lines:
        terminalreporter.write_sep("-", "fleetrun infra")
        for line in lines:
            terminalreporter.write_line(line)


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Synthesized:
    """Templates of one synthesis run, as parsed JSON, plus how long it took."""

    templates: dict[str, dict[str, Any]]
    seconds: float


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = shared / "fleetrun-infra"
    path.mkdir(exist_ok=True)
    return path


@contextmanager
def _locked(directory: Path, name: str) -> Iterator[None]:
    with (directory / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=SYNTH_TIMEOUT, check=False,
    )


def _once(tmp_path_factory: pytest.TempPathFactory, name: str, work: Any, lock: str) -> dict[str, Any]:
    """Run `work(directory)` once per session across xdist workers; its JSON result is shared.

    Jobs that package the same Chalice project share a lock: Chalice writes its dependency
    cache (`.chalice/deployments/*.zip`) in place, and a concurrent build would reuse half a zip.
    """
    shared = _shared_dir(tmp_path_factory)
    result_file = shared / f"{name}.json"
    with _locked(shared, lock):
        if not result_file.exists():
            directory = shared / name
            directory.mkdir(exist_ok=True)
            result_file.write_text(json.dumps(work(directory)))
    result: dict[str, Any] = json.loads(result_file.read_text())
    if result.get("error"):
        pytest.fail(result["error"], pytrace=False)
    return result


def _synth(directory: Path, *context: str) -> dict[str, Any]:
    args = [sys.executable, "infra/app.py"]
    for item in context:
        args += ["-c", item]
    started = time.monotonic()
    proc = _run(args, CDK_OUTDIR=str(directory))
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        return {"error": f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"}
    templates = {p.stem.removesuffix(".template"): str(p) for p in directory.glob("*.template.json")}
    return {"templates": templates, "seconds": seconds, "outdir": str(directory)}


def _load(result: dict[str, Any]) -> Synthesized:
    templates = {stage: json.loads(Path(path).read_text()) for stage, path in result["templates"].items()}
    return Synthesized(templates=templates, seconds=result["seconds"])


@pytest.fixture(scope="session")
def infra_shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the infra tests leave results for the summary (shared by xdist workers)."""
    return _shared_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """`python infra/app.py -c stage=dev,prod`: the real app, both stages (a missing CDK fails
    the synthesis, and so these tests: `make test` installs requirements-infra.txt)."""
    contexts = ("stage=dev,prod", f"prod:notifyEmailSender={NOTIFY_SENDER}")
    return _load(_once(tmp_path_factory, "synth-app", lambda d: _synth(d, *contexts), lock="app"))


@pytest.fixture(scope="session")
def synthesized_fixture_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The same infrastructure around tests/infra/fixture_app (WebSocket, more queues) and an
    external OIDC issuer."""
    source = FIXTURE_APP.relative_to(ROOT)
    return _load(_once(tmp_path_factory, "synth-fixture", lambda d: _synth(
        d, "stage=dev", f"sourceDir={source}", f"oidcIssuer={FIXTURE_ISSUER}", f"oidcAudience={FIXTURE_AUDIENCE}",
        f"harborUrl={FIXTURE_HARBOR_URL}", "harborRobotName=robot$sync",
        f"harborRobotSecretArn={FIXTURE_HARBOR_SECRETS[0]}", f"harborWebhookSecretArn={FIXTURE_HARBOR_SECRETS[1]}",
    ), lock="fixture"))


@pytest.fixture(scope="session")
def template_files(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    result = json.loads((_shared_dir(tmp_path_factory) / "synth-app.json").read_text())
    return {stage: Path(path) for stage, path in result["templates"].items()}


@pytest.fixture(scope="session")
def fixture_template_files(synthesized_fixture_app: Synthesized,
                           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    result = json.loads((_shared_dir(tmp_path_factory) / "synth-fixture.json").read_text())
    return {f"fixture-{stage}": Path(path) for stage, path in result["templates"].items()}


def _package(directory: Path) -> dict[str, Any]:
    out = directory / "package"
    started = time.monotonic()
    proc = _run([sys.executable, "infra/packaging.py", str(out), "--stage", "dev"])
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "seconds": time.monotonic() - started, "zip": str(out / "deployment.zip"), "sam": str(out / "sam.json")}


@pytest.fixture(scope="session")
def chalice_package(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`chalice package` of the app (stage dev) into a temporary directory."""
    return _once(tmp_path_factory, "package", _package, lock="app")
