"""CDK app of fleetrun: `python infra/app.py [-c stage=dev|prod|dev,prod] [-c key=value ...]`.

`-c sourceDir=PATH` (relative to the repository) synthesizes another Chalice project with the
same infrastructure; the infra tests use it for handlers app.py does not have yet.

Synthesizes offline into `$CDK_OUTDIR` (set by the CDK CLI) or `cdk.out/`; no CDK CLI needed.
Context keys: see infra/settings.py. The CDK CLI runs this file through infra/cdk.json.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INFRA = Path(__file__).resolve().parent
ROOT = INFRA.parent
# Chalice imports the project's `app` module: this file's folder must not shadow it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != INFRA]
sys.path.insert(0, str(ROOT))

import aws_cdk as cdk  # noqa: E402

from infra.packaging import ensure_region  # noqa: E402
from infra.settings import STAGES, stage_settings  # noqa: E402
from infra.stack import FleetrunStack  # noqa: E402


def _context_from_argv(argv: list[str]) -> dict[str, str]:
    """`-c key=value` / `--context key=value`, as the CDK CLI spells it."""
    context, args = {}, iter(argv)
    for arg in args:
        if arg in ("-c", "--context"):
            key, _, value = next(args, "").partition("=")
            context[key] = value
    return context


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """`chalice.cdk.Chalice` packages into `./chalice.out`: keep that inside the output folder."""
    previous = Path.cwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def build(outdir: Path, context: dict[str, str]) -> cdk.App:
    ensure_region()
    app = cdk.App(outdir=str(outdir), context=context)
    requested = str(app.node.try_get_context("stage") or "dev")
    stages = [s.strip() for s in requested.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise SystemExit(f"unknown stage {requested!r}: use {', '.join(STAGES)} or a comma-separated list")
    # the Chalice project to deploy: this repository, or (infra tests) a small fixture app
    source_dir = (ROOT / str(app.node.try_get_context("sourceDir") or ".")).resolve()
    build_dir = outdir / "chalice-build"
    shutil.rmtree(build_dir, ignore_errors=True)
    with _working_directory(build_dir):
        for stage in stages:
            FleetrunStack(app, stage_settings(app.node, stage), source_dir=source_dir)
    return app


def main() -> None:
    outdir = Path(os.environ.get("CDK_OUTDIR") or ROOT / "cdk.out").resolve()
    app = build(outdir, _context_from_argv(sys.argv[1:]))
    assembly = app.synth()
    for stack in assembly.stacks:
        print(f"synthesized {stack.stack_name}: {Path(assembly.directory, stack.template_file)}")


if __name__ == "__main__":
    main()
