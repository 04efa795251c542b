"""Property-based run of every operation in the OpenAPI spec: no 5xx, responses match the spec.

Each operation gets valid and invalid inputs generated from the spec, with random ids and
with the ids of real objects (a succeeded audit with a report, its dataset, a scan).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from apitools import OPERATIONS, report_example, submit, upload, valid_npz
from store import repository

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 12


@pytest.fixture
def real_ids(backend, api) -> dict[str, str]:
    dataset = upload(api, valid_npz(seed=3)).json()["id"]
    audit = submit(api, dataset).json()["id"]
    with backend.sessions() as session:
        repository.claim_audit(session, audit, "w")
        repository.finish_audit(session, audit, report=report_example([1]), html="<p>ok</p>")
    scan = api.post("/scans", json={"dataset_ids": [dataset]}).json()["id"]
    return {"dataset_id": dataset, "audit_id": audit, "scan_id": scan}


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_operation_conforms_and_never_fails(backend, key, real_ids, operation_id):
    schema = schemathesis.openapi.from_url(f"{backend.base_url}/api/v1/openapi.json")
    operation = next(r.ok() for r in schema.get_all_operations() if r.ok().definition.raw.get("operationId")
                     == operation_id)
    names = {p.name for p in operation.path_parameters}
    real = {name: value for name, value in real_ids.items() if name in names}
    strategies = [operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
    if real:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real))
    headers = {"Authorization": f"Bearer {key}"}

    @given(case=st.one_of(strategies))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        case.call_and_validate(base_url=backend.base_url, headers=headers, checks=CHECKS, timeout=30)

    run()
