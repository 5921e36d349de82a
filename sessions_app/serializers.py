"""Input serializers reject bad input (400, nothing changed); output serializers render
the camelCase shapes of CONTRACT §3."""

import re

from django.conf import settings
from rest_framework import serializers

from sessions_app.models import CollabSession, Membership, MessageRole, Regeneration, Role

_SURROGATE = re.compile("[\ud800-\udfff]")  # what DRF's ProhibitSurrogateCharactersValidator refuses
_DATETIME = serializers.DateTimeField()  # renders as every DateTimeField of ours (settings.USE_TZ, DRF's format)


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


class StrictIntegerField(serializers.IntegerField):
    """An IntegerField that refuses strings, floats and booleans in a JSON body."""

    default_error_messages = {"invalid": "Must be an integer."}

    def to_internal_value(self, data):
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- input --------------------------------------------------------------------------------
class SessionInput(serializers.Serializer):
    title = StrictCharField(max_length=200)


class MemberInput(serializers.Serializer):
    username = StrictCharField(max_length=150)
    role = serializers.ChoiceField(choices=[Role.EDITOR, Role.VIEWER])


class MessageInput(serializers.Serializer):
    content = StrictCharField(max_length=settings.CHORUS_MAX_MESSAGE_CHARS, trim_whitespace=False)
    reply = StrictBooleanField(default=False)

    def to_internal_value(self, data):
        # The common valid body is accepted without building the fields (a deep copy of
        # each declared field per request: about 0.1 ms of a post's CPU); anything else,
        # every invalid body included, goes through the fields and gets their errors.
        # Tests compare both ways on valid and invalid bodies.
        if type(data) is dict and data.keys() <= {"content", "reply"}:
            content, reply = data.get("content"), data.get("reply", False)
            if (
                type(content) is str
                and 0 < len(content) <= settings.CHORUS_MAX_MESSAGE_CHARS
                and type(reply) is bool
                and "\x00" not in content
                and (content.isascii() or not _SURROGATE.search(content))
            ):
                return {"content": content, "reply": reply}
        return super().to_internal_value(data)

    def run_validators(self, value):
        # Serializer.run_validators builds the fields to collect read-only defaults, and
        # this serializer has neither those nor validators of its own.
        if self.validators:
            super().run_validators(value)


class PageQuery(serializers.Serializer):
    """Documents DRF's page parameter on the lists that paginate by hand (a page past the
    last one, or not a number, is 404)."""

    page = serializers.IntegerField(min_value=1, required=False)


class EventsQuery(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, default=0)
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)


# --- output -------------------------------------------------------------------------------
class MemberOutput(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    lastReadEventId = serializers.IntegerField(source="last_read_event_id")

    class Meta:
        model = Membership
        fields = ["username", "role", "lastReadEventId"]


class SessionOutput(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username")
    role = serializers.SerializerMethodField()
    createdAt = serializers.DateTimeField(source="created_at")
    lastEventId = serializers.IntegerField(source="last_event_id")
    members = serializers.SerializerMethodField()

    class Meta:
        model = CollabSession
        fields = ["id", "title", "owner", "role", "createdAt", "lastEventId", "members"]

    def _memberships(self, obj):
        return sorted(obj.memberships.all(), key=lambda m: (m.created_at, m.pk))

    def get_role(self, obj) -> str | None:
        user = self.context["request"].user
        return next((m.role for m in self._memberships(obj) if m.user_id == user.pk), None)

    def get_members(self, obj) -> list[dict]:
        return MemberOutput(self._memberships(obj), many=True).data


class MessageOutput(serializers.Serializer):
    # A plain Serializer with every field declared: a ModelSerializer derives its fields
    # from the model on every instantiation, which was 8% of a message post's CPU.
    id = serializers.UUIDField()
    sessionId = serializers.UUIDField(source="session_id")
    role = serializers.ChoiceField(choices=MessageRole.choices)
    author = serializers.SerializerMethodField()
    content = serializers.CharField(allow_blank=True)
    createdAt = serializers.DateTimeField(source="created_at")
    editedAt = serializers.DateTimeField(source="edited_at", allow_null=True)
    originalMessageId = serializers.UUIDField(source="original_message_id", allow_null=True)

    def get_author(self, obj) -> str | None:
        return obj.author.username if obj.author_id else None

    def to_representation(self, obj) -> dict:
        # What the declared fields render, written out: binding the fields (a deep copy of
        # each per instance) and walking them cost more than the post's INSERT (about
        # 0.15 ms of CPU). The fields stay declared for the schema; tests compare both.
        return {
            "id": str(obj.id),
            "sessionId": str(obj.session_id),
            "role": str(obj.role),
            "author": self.get_author(obj),
            "content": str(obj.content),
            "createdAt": _DATETIME.to_representation(obj.created_at),
            "editedAt": None if obj.edited_at is None else _DATETIME.to_representation(obj.edited_at),
            "originalMessageId": None if obj.original_message_id is None else str(obj.original_message_id),
        }


class TicketOutput(serializers.Serializer):
    ticket = serializers.CharField()
    expiresIn = serializers.IntegerField()


# --- regenerations and message changes (issue 3) ------------------------------------------
class StrictUUIDField(serializers.UUIDField):
    """A UUIDField that accepts only strings (DRF's also turns integers into UUIDs)."""

    default_error_messages = {"invalid": "Must be a valid UUID string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class RegenerateInput(serializers.Serializer):
    sessionId = StrictUUIDField()
    messageId = StrictUUIDField()
    query = StrictCharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=settings.CHORUS_MAX_MESSAGE_CHARS,
        trim_whitespace=False,
        help_text="An extra instruction for this answer (e.g. 'shorter, please').",
    )


class MessageEditInput(serializers.Serializer):
    content = StrictCharField(max_length=settings.CHORUS_MAX_MESSAGE_CHARS, trim_whitespace=False)


class RegenerationStartedOutput(serializers.Serializer):
    success = serializers.BooleanField()
    regenerationId = serializers.UUIDField()
    messageId = serializers.UUIDField(help_text="The new assistant message that the regeneration writes.")
    originalMessageId = serializers.UUIDField(help_text="The message that was named in the request.")
    taskId = serializers.CharField(help_text="Carried by the regeneration's events (equal to regenerationId).")


class MessageCreatedOutput(MessageOutput):
    # The schema of a post's answer; rendered (if ever) by its fields, regenerationId included.
    to_representation = serializers.Serializer.to_representation

    regenerationId = serializers.UUIDField(
        required=False, help_text='Only with "reply": true: the regeneration writing the answer.'
    )


class RegenerationOutput(serializers.ModelSerializer):
    sessionId = serializers.UUIDField(source="session_id")
    messageId = serializers.UUIDField(source="message_id")
    createdAt = serializers.DateTimeField(source="created_at")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)  # null until it ends
    error = serializers.SerializerMethodField()

    class Meta:
        model = Regeneration
        fields = ["id", "sessionId", "messageId", "status", "progress", "content", "error", "createdAt", "finishedAt"]

    def get_error(self, obj) -> str | None:
        return obj.error or None


# --- presence, typing, read positions (CONTRACT §7) ------------------------------------------
class ReadPositionInput(serializers.Serializer):
    lastEventId = StrictIntegerField(min_value=0, max_value=2**63 - 1)


class ReadPositionOutput(serializers.Serializer):
    lastEventId = serializers.IntegerField()


class PresenceUserOutput(serializers.Serializer):
    username = serializers.CharField()
    streams = serializers.IntegerField()
    since = serializers.DateTimeField()


class PresenceOutput(serializers.Serializer):
    online = PresenceUserOutput(many=True)
