"""Schemathesis against the OpenAPI schema served at /api/schema/: every operation, with
valid and invalid input, answers only documented statuses with documented bodies, and
never 500.

Each operation is one test, run in-process through Django's WSGI handler (the same views
and middleware as under ASGI) inside the test's transaction, so nothing outlives it.
Bounded and deterministic: at most 15 generated cases per operation and mode, a fixed
seed, no example database, no shrinking. Positive cases are pointed at real objects (a
session owned by the caller, a message, a queued regeneration, a member, a user to add)
three times in four, so the success paths run too, not only the 404s; each operation
must have answered 2xx at least once.

Checks: Schemathesis' defaults (not_a_server_error, status_code_conformance,
content_type_conformance, response_schema_conformance, response_headers_conformance,
negative_data_rejection, unsupported_method, ...) except positive_data_acceptance: rules
that a schema cannot express (an unknown username, a wrong password, a member already
added) rightly refuse schema-valid input with 400.
"""

from __future__ import annotations

import json
import zlib

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation

from sessions_app import services
from sessions_app.regenerations import services as regeneration_services
from tests.conftest import token_for

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261130,
        "generation": {
            "max-examples": 15,
            "deterministic": True,
            "database": "none",
            "no-shrink": True,
            "mode": "all",
            # Unknown query parameters and body fields are ignored, as HTTP APIs do; a
            # request that adds one is not invalid.
            "allow-extra-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},
        "checks": {"positive_data_acceptance": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)

# Filled by the `fuzz` fixture for the test that runs; read by the hook below.
REAL: dict[str, str] = {}
# Body fields of the positive cases that may be pointed at real objects, and at which.
BODY_FIELDS = {"sessionId": "session_id", "messageId": "message_id", "username": "new_member"}
PASSWORD = "pw-for-tests"


def _positive(case, location: ParameterLocation) -> bool:
    info = case.meta.components.get(location) if case.meta is not None else None
    return info is None or info.mode == schemathesis.GenerationMode.POSITIVE


def _three_in_four(value) -> bool:
    # A stable choice from the generated value (Python's hash() changes between runs).
    return zlib.crc32(json.dumps(value, sort_keys=True, default=str).encode()) % 4 != 0


@schema.hook
def map_case(context, case):
    """Point positive cases at real objects; negative ones stay as generated (a valid id
    would make them valid)."""
    if not REAL:
        return case
    if case.path_parameters and _positive(case, ParameterLocation.PATH) and _three_in_four(case.path_parameters):
        case.path_parameters = {**case.path_parameters, **{k: REAL[k] for k in case.path_parameters if k in REAL}}
    if isinstance(case.body, dict) and _positive(case, ParameterLocation.BODY) and _three_in_four(case.body):
        body = {**case.body, **{k: REAL[v] for k, v in BODY_FIELDS.items() if k in case.body}}
        if case.operation.path.endswith("/auth/token/"):
            body = {"username": "alice", "password": PASSWORD}
        case.body = body
    return case


class Fuzz:
    def __init__(self, headers: dict[str, str], staff_headers: dict[str, str]) -> None:
        self.headers = headers
        self.staff_headers = staff_headers  # for the staff-only operations (/api/v1/ops/)
        self.statuses: list[int] = []


@pytest.fixture
def fuzz(db, alice, bob, collab, make_user, staff_user):
    """Alice, the owner of `collab`, with a message of bob's and a queued regeneration of
    it (in this transaction no runner starts). Asserts at the end that the operation
    under test succeeded at least once."""
    make_user("dave")  # not a member yet: the user that POST members/ adds
    message = services.message_create(session=collab, author=bob, content="hello")
    regeneration = regeneration_services.regeneration_start(session=collab, source_message=message, requested_by=alice)
    REAL.update(
        session_id=str(collab.pk),
        message_id=str(message.pk),
        regeneration_id=str(regeneration.pk),
        username="bob",
        new_member="dave",
    )
    # Like Django's test client: a request's end must not close the test's connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    state = Fuzz({"Authorization": f"Token {token_for(alice)}"}, {"Authorization": f"Token {token_for(staff_user)}"})
    try:
        yield state
    finally:
        REAL.clear()
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
        cache.clear()  # throttle counters
    assert any(200 <= status < 300 for status in state.statuses), sorted(set(state.statuses))


@schema.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_api_conforms_to_its_schema(case, fuzz):
    staff_only = case.operation.path.startswith("/api/v1/ops/")
    response = case.call_and_validate(headers=fuzz.staff_headers if staff_only else fuzz.headers)
    fuzz.statuses.append(response.status_code)
