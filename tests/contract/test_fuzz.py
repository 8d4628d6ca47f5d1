"""Schema fuzzing: schemathesis generates requests from the server's own /openapi.json.

No generated request, valid or not, may get a 5xx, and every response must match the schema
the server publishes. At least `contract.fuzz_cases` cases run in all.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from pipeline.config import ContractParams

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def test_generated_requests_get_no_5xx_and_schema_conformant_responses(
    base_url: str, budgets: ContractParams, record_property: Callable[[str, object], None]
) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    with_body = [op for op in operations if op.body] or operations
    per_operation = math.ceil(budgets.fuzz_cases / len(with_body)) + 10
    counted: dict[str, int] = {}
    for operation in operations:
        examples = per_operation if operation in with_body else 20

        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            counted[case.operation.label] = counted.get(case.operation.label, 0) + 1
            case.call_and_validate(base_url=base_url, checks=CHECKS)

        check()
    total = sum(counted.values())
    record_property("fuzz_cases", total)
    print(f"schemathesis: {total} cases over {len(operations)} operations: {counted}")
    if total < budgets.fuzz_cases:
        pytest.fail(
            f"only {total} cases generated, fewer than contract.fuzz_cases ({budgets.fuzz_cases})"
        )
