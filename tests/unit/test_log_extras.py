"""`extra=` keys that collide with LogRecord attributes make logging raise (KeyError)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

RESERVED = set(logging.LogRecord("n", 0, "p", 0, "m", None, None).__dict__) | {"message", "asctime"}


def test_no_log_call_passes_an_extra_key_that_logging_reserves():
    offenders = []
    for path in Path("chalicelib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "extra" and isinstance(node.value, ast.Dict):
                for key in node.value.keys:
                    if isinstance(key, ast.Constant) and key.value in RESERVED:
                        offenders.append(f"{path}:{key.lineno} {key.value}")
    assert offenders == []
