"""`chalice package` of the app, the way the CDK construct runs it, plus the package-size budget.

`make package` and the tests call this instead of the `chalice package` command line because
the CLI can only take `autogen_policy` from `.chalice/config.json`, and Chalice's policy
analyzer cannot read app.py (nor would its policy be least-privilege: PynamoDB calls are
invisible to it). The IAM roles are made in `infra/`; the template gets a placeholder role ARN
that the CDK app overrides per function.
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: the deployment package (unzipped) must stay under this (the issue's budget: 50 MB)
PACKAGE_BUDGET_BYTES = 50_000_000
_MB = 1_000_000
#: replaced per function by the CDK app (see infra/chalice_app.py)
PLACEHOLDER_ROLE_ARN = "arn:aws:iam::000000000000:role/fleetrun-placeholder"


def _shipped(zip_path: str) -> bool:
    """Whether a file goes into the Lambda package: not the bytecode of this machine's tree
    (`chalicelib/__pycache__`, stale on Lambda) and not botocore's API documentation examples
    (`examples-1.json`, 1.6 MB that only documentation tools read)."""
    parts = zip_path.replace("\\", "/").split("/")
    return "__pycache__" not in parts and not ("botocore" in parts and parts[-1] == "examples-1.json")


class _FilteredZip:
    """A ZipFile whose `write` skips what is not `_shipped`."""

    def __init__(self, zipped: Any) -> None:
        self._zipped = zipped

    def write(self, filename: str, arcname: str | None = None, *args: Any, **kwargs: Any) -> None:
        if _shipped(arcname if arcname is not None else filename):
            self._zipped.write(filename, arcname, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._zipped, name)


def install_package_filter() -> None:
    """Make chalice's packager (1.34: `BaseLambdaDeploymentPackager`) leave out what is not
    `_shipped`, for `make package`, the tests and the CDK construct alike. The dependencies are
    filtered when their zip is built, which chalice caches in `.chalice/deployments/` by the hash
    of requirements.txt: a cache built before the filter keeps the files (delete it)."""
    from chalice.deploy import packager

    base: Any = packager.BaseLambdaDeploymentPackager
    if getattr(base, "_fleetrun_filtered", False):
        return
    add_py_deps, iter_lib = base._add_py_deps, base._iter_chalice_lib_if_needed

    def _add_py_deps(self: Any, zip_fileobj: Any, deps_dir: str, prefix: str = "") -> None:
        add_py_deps(self, _FilteredZip(zip_fileobj), deps_dir, prefix)

    def _iter_chalice_lib_if_needed(self: Any, project_dir: str) -> Any:
        return ((full, zip_path) for full, zip_path in iter_lib(self, project_dir) if _shipped(zip_path))

    base._add_py_deps = _add_py_deps
    base._iter_chalice_lib_if_needed = _iter_chalice_lib_if_needed
    base._fleetrun_filtered = True


def stage_config() -> dict[str, Any]:
    """Chalice settings the CDK app and `make package` add to `.chalice/config.json`."""
    return {
        "autogen_policy": False,
        "manage_iam_role": False,
        "iam_role_arn": PLACEHOLDER_ROLE_ARN,
    }


def ensure_region() -> None:
    """`chalice package` asks botocore for a region (to spell the API Gateway principal)."""
    if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
        os.environ["AWS_DEFAULT_REGION"] = os.environ.get("CDK_DEFAULT_REGION") or "us-east-1"


def package(out_dir: Path, stage: str) -> Path:
    """Write `sam.json` and `deployment.zip` of `stage` to `out_dir`; returns the zip's path."""
    from chalice.api import package_app

    ensure_region()
    install_package_filter()
    package_app(project_dir=str(ROOT), output_dir=str(out_dir), stage=stage, chalice_config=stage_config())
    return out_dir / "deployment.zip"


def unzipped_size(zip_path: Path) -> int:
    with zipfile.ZipFile(zip_path) as archive:
        return sum(info.file_size for info in archive.infolist())


def size_report(zip_path: Path) -> str:
    size = unzipped_size(zip_path)
    return (
        f"deployment package: {zip_path.stat().st_size / _MB:.1f} MB zipped, "
        f"{size / _MB:.1f} MB unzipped (budget {PACKAGE_BUDGET_BYTES / _MB:.0f} MB)"
    )


def main(argv: list[str] | None = None) -> int:
    # Chalice imports the project's `app` module: infra/app.py must not shadow it
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    parser = argparse.ArgumentParser(description="chalice package fleetrun and check its size")
    parser.add_argument("out", type=Path, help="output directory (sam.json, deployment.zip)")
    parser.add_argument("--stage", default="dev", choices=["dev", "prod"])
    args = parser.parse_args(argv)
    zip_path = package(args.out, args.stage)
    print(size_report(zip_path))
    if unzipped_size(zip_path) >= PACKAGE_BUDGET_BYTES:
        print("deployment package is over budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
