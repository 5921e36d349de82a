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
