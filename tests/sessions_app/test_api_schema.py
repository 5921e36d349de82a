"""The OpenAPI schema and Swagger UI (offline, from drf-spectacular-sidecar), with every
event type documented as its payload builder makes it."""

from __future__ import annotations

import json

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command

from realtime import events
from realtime.events import EventType
from sessions_app.schema import EVENT_DATA, _component_name

pytestmark = [pytest.mark.django_db]

SAMPLES = {
    EventType.MEMBER_JOINED: events.member_joined(username="a", role="editor"),
    EventType.MEMBER_LEFT: events.member_left(username="a", role="editor"),
    EventType.MESSAGE_CREATED: events.message_created(message_id="m", role="user", author="a", content="c"),
    EventType.MESSAGE_EDITED: events.message_edited(message_id="m", role="user", author="a", content="c"),
    EventType.MESSAGE_DELETED: events.message_deleted(deleted_message_ids=["m"]),
    EventType.MESSAGE_REGENERATING: events.message_regenerating(
        message_id="m", original_message_id=None, task_id="t", regeneration_id="r", user_query=None
    ),
    EventType.REGENERATION_PROGRESS: events.regeneration_progress(
        message_id="m", task_id="t", progress=1, offset=0, delta="d"
    ),
    EventType.MESSAGE_REGENERATED: events.message_regenerated(message_id="m", task_id="t", content="c"),
    EventType.REGENERATION_ERROR: events.regeneration_error(message_id="m", task_id="t", error="e"),
    EventType.REGENERATION_CANCELLED: events.regeneration_cancelled(message_id="m", task_id="t"),
    EventType.THOUGHT_PROCESS_START: events.thought_process_start(message_id="m", task_id="t", thinking_about="x"),
    EventType.THOUGHT_PROCESS_STEP: events.thought_process_step(message_id="m", task_id="t", step=1, reasoning="r"),
    EventType.THOUGHT_PROCESS_COMPLETE: events.thought_process_complete(message_id="m", task_id="t", conclusion="c"),
    EventType.SESSION_UPDATED: events.session_updated(title="t"),
    EventType.SYSTEM: events.system(message="m"),
}


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def test_schema_documents_the_regeneration_endpoints(schema):
    paths = schema["paths"]
    # Served with and without the trailing slash; the schema lists one spelling.
    assert "post" in paths["/api/v1/chat_actions/regenerate/"]
    assert "get" in paths["/api/v1/regenerations/{regeneration_id}/"]
    assert "post" in paths["/api/v1/regenerations/{regeneration_id}/cancel/"]
    detail = paths["/api/v1/sessions/{session_id}/messages/{message_id}/"]
    assert {"patch", "delete"} <= set(detail)
    components = schema["components"]["schemas"]
    assert {"RegenerationOutput", "RegenerateInputRequest", "RegenerationStartedOutput"} <= set(components)


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_is_documented_like_its_builder_makes_it(schema, event_type):
    assert set(SAMPLES) == set(EventType) == set(EVENT_DATA)
    component = schema["components"]["schemas"][_component_name(event_type)]
    assert component["properties"]["type"]["enum"] == [event_type.value]
    documented = component["properties"]["data"]["properties"]
    payload = json.loads(json.dumps(SAMPLES[event_type].data))  # what Redis would carry
    assert set(documented) == set(payload)
    one_of = schema["components"]["schemas"]["Event"]["discriminator"]["mapping"]
    assert one_of[event_type.value].endswith(_component_name(event_type))


def test_schema_generates_without_warnings_and_validates(tmp_path):
    call_command("spectacular", "--file", str(tmp_path / "schema.yml"), "--validate", "--fail-on-warn")


def test_swagger_ui_works_offline(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/api/schema/" in html
    assert "cdn" not in html.lower() and "https://" not in html
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


# --- error responses (sessions_app.schema.add_error_responses) -------------------------------
def test_every_operation_documents_its_json_errors(schema):
    from sessions_app.schema import ANONYMOUS_OPERATIONS, OPERATION_ERRORS

    operations = {
        (method, path): operation
        for path, methods in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method, operation in methods.items()
    }
    assert set(OPERATION_ERRORS) <= set(operations)  # no key names a renamed operation
    assert set(ANONYMOUS_OPERATIONS) <= set(operations)
    error_ref = {"$ref": "#/components/schemas/Error"}
    for (method, path), operation in operations.items():
        responses = operation["responses"]
        assert "401" in responses, (method, path)
        if "{" in path:
            assert "404" in responses, (method, path)
        if "requestBody" in operation:
            assert {"400", "415"} <= set(responses), (method, path)
        for status, response in responses.items():
            if status.startswith("4"):
                assert response["content"]["application/json"]["schema"] == error_ref
    regenerate = operations[("post", "/api/v1/chat_actions/regenerate/")]["responses"]
    assert {"403", "404", "409", "429"} <= set(regenerate)
    assert "Retry-After" in regenerate["429"]["headers"]
    assert "403" not in operations[("get", "/api/v1/sessions/{session_id}/")]["responses"]


def test_ids_in_paths_are_documented_as_uuids_and_lists_as_pages(schema):
    detail = schema["paths"]["/api/v1/sessions/{session_id}/messages/{message_id}/"]
    assert {"get", "patch", "delete"} <= set(detail)
    parameters = {p["name"]: p["schema"] for p in detail["get"]["parameters"]}
    assert parameters["session_id"] == parameters["message_id"] == {"type": "string", "format": "uuid"}
    for path in ("/api/v1/sessions/", "/api/v1/sessions/{session_id}/messages/"):
        assert "page" in {p["name"] for p in schema["paths"][path]["get"]["parameters"]}


def test_obtaining_a_token_needs_no_credentials(schema):
    assert {} in schema["paths"]["/api/v1/auth/token/"]["post"]["security"]


def test_patch_bodies_are_documented_as_the_views_read_them(schema):
    components = schema["components"]["schemas"]
    assert components["SessionInputRequest"]["required"] == ["title"]
    assert components["MessageEditInputRequest"]["required"] == ["content"]
    assert components["RegenerationOutput"]["properties"]["finishedAt"].get("nullable") is True
