"""Cold start: `import app` loads only what every function needs (bench/coldstart.py measures it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chalicelib import lazy, resources
from chalicelib.sqs_batch import BatchProcessor, EventType

ROOT = Path(__file__).resolve().parents[2]
#: loaded on first use by the handlers that need them, never by `import app`
HEAVY = ("jsonschema", "pynamodb.models", "jwt", "aws_lambda_powertools.utilities.batch", "chalicelib.services.claims",
         "chalicelib.store.inventory", "openpyxl", "requests")


def _modules_after_import_app() -> set[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLEETRUN_", "POWERTOOLS_"))}
    env.update({"LAMBDA_TASK_ROOT": str(ROOT), "AWS_LAMBDA_FUNCTION_NAME": "fleetrun-test", "AWS_REGION": "us-east-1",
                "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"})
    code = "import json, sys, app; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_import_app_with_tracing_on_loads_no_service_schema_library_or_model() -> None:
    loaded = _modules_after_import_app()
    assert "aws_xray_sdk.core" in loaded  # the tracer is on, as on Lambda
    assert [name for name in HEAVY if name in loaded] == []


def test_ttl_attribute_spelled_out_in_resources_is_the_models_one() -> None:
    from chalicelib.store.models import TTL_ATTRIBUTE

    assert resources.TTL_ATTRIBUTE_NAME == TTL_ATTRIBUTE


def test_lazy_module_reads_and_writes_go_to_the_real_module_after_first_use() -> None:
    stand_in = lazy.module("chalicelib.clock")
    import chalicelib.clock as real

    assert stand_in.now_iso is real.now_iso
    stand_in.bench_marker = 1
    try:
        assert real.bench_marker == 1  # type: ignore[attr-defined]
    finally:
        del stand_in.bench_marker
    assert not hasattr(real, "bench_marker")


def test_lazy_attribute_calls_and_reads_the_real_object() -> None:
    month = lazy.attribute("chalicelib.services.usage", "Month")
    from chalicelib.services.usage import Month

    assert month.parse("2026-03") == Month.parse("2026-03")


def test_sqs_batch_stand_in_builds_one_real_processor_with_the_same_settings() -> None:
    from aws_lambda_powertools.utilities.batch import BatchProcessor as Real

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    real = processor.real
    assert isinstance(real, Real)
    assert processor.real is real
    assert real.event_type.name == "SQS"
    assert real.raise_on_entire_batch_failure is False
