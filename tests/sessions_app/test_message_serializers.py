"""The message post's serializers skip building their fields for the common case
(sessions_app.serializers): what they give must be what the declared fields give."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from rest_framework import serializers

from sessions_app import services
from sessions_app.serializers import MessageInput, MessageOutput


class FieldsMessageInput(MessageInput):
    to_internal_value = serializers.Serializer.to_internal_value
    run_validators = serializers.Serializer.run_validators


class FieldsMessageOutput(MessageOutput):
    to_representation = serializers.Serializer.to_representation


def validate(serializer_class, body) -> tuple[bool, dict]:
    serializer = serializer_class(data=body)
    valid = serializer.is_valid()
    return valid, (dict(serializer.validated_data) if valid else serializer.errors)


@pytest.mark.parametrize(
    "body",
    [
        {"content": "hello"},
        {"content": "hello", "reply": True},
        {"content": "  kept  \n"},
        {"content": "émoji 🚀"},
        {"content": "x" * 4000},
        {"content": "hello", "extra": 1},
        {"content": ""},
        {"content": "   "},
        {"content": None},
        {"content": 5},
        {"content": "nul\x00"},
        {"content": "lone \ud800 surrogate"},
        {"content": "hello", "reply": "yes"},
        {"content": "hello", "reply": None},
        {"reply": True},
        {},
        [],
        "text",
    ],
)
def test_message_input_gives_what_its_fields_give(settings, body):
    settings.CHORUS_MAX_MESSAGE_CHARS = 4000
    assert validate(MessageInput, body) == validate(FieldsMessageInput, body)


def test_message_input_refuses_content_over_the_limit_like_its_field():
    from django.conf import settings

    body = {"content": "x" * (settings.CHORUS_MAX_MESSAGE_CHARS + 1)}
    assert validate(MessageInput, body) == validate(FieldsMessageInput, body)
    assert validate(MessageInput, body)[0] is False


@pytest.mark.django_db
def test_message_output_renders_what_its_fields_render(collab, alice, bob):
    plain = services.message_create(session=collab, author=bob, content="plain")
    edited = services.message_edit(
        message=services.message_create(session=collab, author=alice, content="a"), content="b"
    )
    edited.edited_at = timezone.now().replace(microsecond=0) + dt.timedelta(microseconds=1234)
    plain.refresh_from_db()
    anonymous = services.message_create(session=collab, author=None, content="", role="assistant")
    anonymous.original_message = plain
    for message in (plain, edited, anonymous):
        assert MessageOutput(message).data == FieldsMessageOutput(message).data
    many = [plain, edited, anonymous]
    assert MessageOutput(many, many=True).data == FieldsMessageOutput(many, many=True).data
