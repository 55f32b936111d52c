"""schemathesis hooks of tests/e2e/test_api_fuzz.py: what a schema cannot say about valid input.

A positive test case is one the OpenAPI document calls valid, so the `positive_data_acceptance`
check expects the service to take it. Some validity is beyond what a JSON Schema can state: a
`cursor` is valid only when the service signed it for that route, filters and user (API.md,
Errors), so a random string the schema allows is rightly refused with 400. Positive cases leave
the cursor out; negative cases keep sending garbage cursors, which must still be a 400, never
a 500. Nothing else is changed: every other refusal of a schema-valid request is a failure.
"""

from __future__ import annotations

import schemathesis
from schemathesis.generation import GenerationMode

#: query parameters whose valid values only the service can make
_SERVICE_MADE = frozenset({"cursor"})


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE or not case.query:
        return case
    if _SERVICE_MADE.isdisjoint(case.query):
        return case
    case.query = {name: value for name, value in case.query.items() if name not in _SERVICE_MADE}
    return case
