"""cfn-lint on every synthesized template, and `chalice package` within the size budget."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.infra, pytest.mark.timeout(1200)]
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


def _lint(path: Path, name: str, shared: Path) -> None:
    proc = subprocess.run([str(CFN_LINT), "--format", "parseable", str(path)], capture_output=True, text=True,
                          timeout=600, check=False)
    findings = [line for line in proc.stdout.splitlines() if line.strip()]
    errors = [line for line in findings if ":E" in line]
    # GIVEN warnings are allowed: show them
    for line in findings:
        print(line)
    print(f"cfn-lint {path.name}: {len(errors)} errors, {len(findings) - len(errors)} warnings/notes")
    (shared / f"lint-{name}.json").write_text(json.dumps({"errors": len(errors),
                                                           "warnings": len(findings) - len(errors)}))
    # exit status is a bit mask: 1 fatal, 2 errors, 4 warnings, 8 informational
    assert proc.returncode & 3 == 0, proc.stdout + proc.stderr
    assert not errors


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_cfn_lint_finds_no_errors(template_files, infra_shared_dir, stage):
    _lint(template_files[stage], stage, infra_shared_dir)


def test_cfn_lint_finds_no_errors_with_websocket_and_more_queues(fixture_template_files, infra_shared_dir):
    _lint(fixture_template_files["fixture-dev"], "fixture-dev", infra_shared_dir)


def test_chalice_package_stays_under_50_mb_unzipped(chalice_package):
    from infra.packaging import PACKAGE_BUDGET_BYTES, size_report, unzipped_size

    assert chalice_package["returncode"] == 0, chalice_package["stdout"] + chalice_package["stderr"]
    zip_path = Path(chalice_package["zip"])
    print(f"\nchalice package took {chalice_package['seconds']:.1f} s; {size_report(zip_path)}")
    assert Path(chalice_package["sam"]).exists()
    with zipfile.ZipFile(zip_path) as archive:
        names = set(archive.namelist())
    # the app and its library are in; the client side (fleetrun/) and the tests are not
    assert {"app.py", "chalicelib/__init__.py", "chalicelib/resources.py"} <= names
    assert not any(n.startswith(("fleetrun/", "tests/", "infra/")) for n in names)
    assert unzipped_size(zip_path) < PACKAGE_BUDGET_BYTES
    # boto3 and botocore ship together, of one release (infra/README.md, "The Lambda package")
    versions = {n.split("-")[0]: n.split("-")[1].removesuffix(".dist-info/METADATA")
                for n in names if n.endswith(".dist-info/METADATA")}
    assert versions["boto3"] == versions["botocore"]
    assert "s3transfer" in versions
    # nothing the functions never read: this machine's bytecode, botocore's documentation examples
    assert not [n for n in names if "__pycache__" in n or n.endswith("examples-1.json")]
