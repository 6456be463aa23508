"""Schemathesis against the gateway's own OpenAPI document: every generated request (query
strings, headers) gets a documented status and a body that matches the schema, never a 5xx.
The event stream never ends, so it is left to tests/services/test_gateway_http.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from services.gateway_http import STREAM_PATH
from tests.services.test_gateway import Served, filled_cache

SCHEMA = schemathesis.openapi.from_path(
    Path(__file__).resolve().parents[2] / "services" / "web" / "openapi.json").exclude(path=STREAM_PATH)


@pytest.fixture(scope="module")
def served():
    s = Served(filled_cache())
    yield s
    s.close()


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_the_openapi_document(case, served):
    response = case.call(base_url=served.base)
    assert response.status_code < 500, response.text[:200]
    case.validate_response(response)
