"""OpenAPI documentation of the events (CONTRACT §4), added to the generated schema.

Events do not pass through DRF views, so drf-spectacular cannot see them: this module
describes each event type's `data` and the common envelope, and a postprocessing hook
(SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]) puts them under `components.schemas`
as `Event` (a oneOf discriminated by `type`) and one `Event<Type>` per type. A test checks
that every `realtime.events.EventType` is described and matches its builder's keys.
"""

from __future__ import annotations

from realtime.events import EventType

_STR = {"type": "string"}
_NULLABLE_STR = {"type": "string", "nullable": True}
_UUID = {"type": "string", "format": "uuid"}
_NULLABLE_UUID = {"type": "string", "format": "uuid", "nullable": True}
_INT = {"type": "integer"}

_RUN = {"messageId": _UUID, "taskId": _STR}
_MESSAGE = {
    "messageId": _UUID,
    "role": {"type": "string", "enum": ["user", "assistant"]},
    "author": _NULLABLE_STR,
    "content": _STR,
}

# type -> (description, properties of `data`)
EVENT_DATA: dict[str, tuple[str, dict[str, dict]]] = {
    EventType.MEMBER_JOINED: ("A member was added.", {"username": _STR, "role": _STR}),
    EventType.MEMBER_LEFT: ("A member was removed; their streams end.", {"username": _STR, "role": _STR}),
    EventType.MESSAGE_CREATED: ("A message was posted.", _MESSAGE),
    EventType.MESSAGE_EDITED: ("A message's content was replaced.", _MESSAGE),
    EventType.MESSAGE_DELETED: (
        "Messages were deleted (a message and its regenerated versions).",
        {"deletedMessageIds": {"type": "array", "items": _UUID}},
    ),
    EventType.MESSAGE_REGENERATING: (
        "A regeneration started writing a new assistant message (`messageId`).",
        {
            "messageId": _UUID,
            "originalMessageId": {**_NULLABLE_UUID, "description": "The message this one is a new version of."},
            "taskId": _STR,
            "regenerationId": _UUID,
            "userQuery": _NULLABLE_STR,
        },
    ),
    EventType.REGENERATION_PROGRESS: (
        "Text appended to the message being written: `delta` goes at `offset` (in Unicode code points); "
        "the deltas in order concatenate to the content. Tokens are coalesced per CHORUS_PROGRESS_FLUSH_MS.",
        {
            **_RUN,
            "progress": {"type": "integer", "minimum": 0, "maximum": 100},
            "offset": {"type": "integer", "minimum": 0},
            "delta": _STR,
        },
    ),
    EventType.MESSAGE_REGENERATED: ("The regeneration completed; `content` is final.", {**_RUN, "content": _STR}),
    EventType.REGENERATION_ERROR: (
        "The regeneration failed; `error` is fit to show a user.",
        {**_RUN, "error": _STR},
    ),
    EventType.REGENERATION_CANCELLED: ("The regeneration was cancelled; no progress follows.", dict(_RUN)),
    EventType.THOUGHT_PROCESS_START: ("The assistant starts thinking.", {**_RUN, "thinkingAbout": _STR}),
    EventType.THOUGHT_PROCESS_STEP: ("One step of its reasoning.", {**_RUN, "step": _INT, "reasoning": _STR}),
    EventType.THOUGHT_PROCESS_COMPLETE: ("The thought process ended.", {**_RUN, "conclusion": _STR}),
    EventType.SESSION_UPDATED: ("The session's title changed.", {"title": _STR}),
    EventType.SYSTEM: ("A notice sent by staff from the ops console.", {"message": _STR}),
}


def _component_name(event_type: str) -> str:
    return "Event" + "".join(part.capitalize() for part in event_type.split("_"))


def event_components() -> dict[str, dict]:
    """The `Event` oneOf and one schema per event type."""
    components: dict[str, dict] = {}
    mapping = {}
    for event_type, (description, properties) in EVENT_DATA.items():
        name = _component_name(event_type)
        mapping[str(event_type)] = f"#/components/schemas/{name}"
        components[name] = {
            "type": "object",
            "description": description,
            "required": ["id", "type", "sessionId", "timestamp", "data"],
            "properties": {
                "id": {"type": "integer", "minimum": 1, "description": "The session's gapless sequence number."},
                "type": {"type": "string", "enum": [str(event_type)]},
                "sessionId": _UUID,
                "timestamp": {"type": "string", "format": "date-time"},
                "data": {"type": "object", "required": list(properties), "properties": properties},
            },
        }
    components["Event"] = {
        "description": (
            "A stored session event: one SSE frame (`id:`, `event: <type>`, `data: <this JSON>`) on "
            "GET /sse/sessions/{id}/, and one item of GET /api/v1/sessions/{id}/events/."
        ),
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }
    return components


def add_event_components(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(event_components())
    return result


# --- shapes that DRF views build by hand ----------------------------------------------------
def paginated(name: str, item_serializer, *, last_event_id: bool = False):
    """A DRF page of `item_serializer` (with `lastEventId` beside it for messages)."""
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    fields = {
        "count": serializers.IntegerField(),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item_serializer(many=True),
    }
    if last_event_id:
        fields["lastEventId"] = serializers.IntegerField(help_text="The session's newest event id, read with the page.")
    return inline_serializer(name, fields=fields)


EVENT_PAGE = {
    "type": "object",
    "required": ["events", "lastId", "truncated"],
    "properties": {
        "events": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
        "lastId": {"type": "integer", "description": "The session's newest event id."},
        "truncated": {"type": "boolean", "description": "Events after `after` were pruned; `events` starts later."},
    },
}


# --- error responses ------------------------------------------------------------------------
# drf-spectacular documents the success of each operation only. Every error below is JSON
# `{"detail": ...}` (sessions_app.exceptions); this hook documents which statuses each
# operation answers, so that clients (and Schemathesis in the tests) know them all.
ERROR = {
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, fit to show a user."},
        "errors": {
            "description": "For 400 on bad input: DRF's errors by field, as they came.",
            "oneOf": [{"type": "object"}, {"type": "array"}],
        },
    },
}

_GENERIC_MEANINGS = {
    "400": "Bad input: malformed JSON, wrong types, over-long content or a bad query parameter; nothing changed.",
    "401": "No credentials, or credentials that are not valid.",
    "403": "A member without the role this needs (a viewer who writes, a non-owner who manages).",
    "404": "No such object, or one that the caller may not know exists (a session they are not a member of).",
    "409": "The request conflicts with the object's state (a message being written, a finished regeneration).",
    "415": "The body is not JSON (Content-Type must be application/json).",
    "429": (
        "Throttled (starting regenerations: per user and per session; obtaining tokens: per client address "
        "and per username); wait for Retry-After seconds."
    ),
}

# Statuses that depend on what the operation does, not on its shape (CONTRACT §2 and §3).
# Keys are (method, path) as in the schema; a test checks that each still names an operation.
OPERATION_ERRORS: dict[tuple[str, str], set[str]] = {
    ("patch", "/api/v1/sessions/{session_id}/"): {"403"},
    ("delete", "/api/v1/sessions/{session_id}/"): {"403"},
    ("post", "/api/v1/sessions/{session_id}/members/"): {"403"},
    ("delete", "/api/v1/sessions/{session_id}/members/{username}/"): {"403"},
    ("post", "/api/v1/sessions/{session_id}/messages/"): {"403", "429"},
    ("patch", "/api/v1/sessions/{session_id}/messages/{message_id}/"): {"403", "409"},
    ("delete", "/api/v1/sessions/{session_id}/messages/{message_id}/"): {"403"},
    ("post", "/api/v1/chat_actions/regenerate/"): {"403", "404", "409", "429"},
    ("post", "/api/v1/regenerations/{regeneration_id}/cancel/"): {"403", "409"},
    ("post", "/api/v1/auth/token/"): {"429"},
}

# Operations that need no credentials (CONTRACT §2): a bad token is still 401 there.
ANONYMOUS_OPERATIONS = {("post", "/api/v1/auth/token/")}

UUID_PATH_PARAMETERS = {"session_id", "message_id", "regeneration_id"}


def _errors_of(method: str, path: str, operation: dict) -> set[str]:
    statuses = set(OPERATION_ERRORS.get((method, path), set())) | {"401"}
    parameters = operation.get("parameters", [])
    if any(p["in"] == "path" for p in parameters) or any(p["name"] == "page" for p in parameters):
        statuses.add("404")  # an unknown or hidden object; a page past the last
    if "requestBody" in operation:
        statuses |= {"400", "415"}
    if any(p["in"] == "query" and p["name"] != "page" for p in parameters):
        statuses.add("400")
    return statuses


def add_error_responses(result: dict, generator, request, public) -> dict:
    """drf-spectacular postprocessing hook: the `Error` schema, each operation's error
    statuses, and uuid path parameters documented as such."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            if (method, path) in ANONYMOUS_OPERATIONS and {} not in operation.setdefault("security", []):
                operation["security"].append({})
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in UUID_PATH_PARAMETERS:
                    parameter["schema"] = {"type": "string", "format": "uuid"}
            responses = operation.setdefault("responses", {})
            for status in sorted(_errors_of(method, path, operation)):
                response = responses.setdefault(
                    status,
                    {
                        "description": _GENERIC_MEANINGS[status],
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
                if status == "429":
                    response.setdefault("headers", {})["Retry-After"] = {
                        "schema": {"type": "integer"},
                        "description": "Seconds to wait before trying again.",
                    }
    return result
