"""The request body of `POST /v1/chat/completions`, validated into a `CompletionRequest`.

OpenAI's request shape (CONTRACT §8): `model`, `messages`, `stream`, `max_tokens` (or
`max_completion_tokens`), `temperature`, `stream_options.include_usage`, plus Chorus's
`session`. Fields Chorus cannot honour in a way that changes the answer's meaning
(`n` other than 1, `tools`, `functions`) are refused with 400; the other OpenAI fields
(`top_p`, `stop`, `user`, `seed`, …) are accepted and ignored. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings

from completions.errors import CompletionError, invalid
from sessions_app.providers import Turn

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_REFUSED = ("tools", "functions", "tool_choice", "function_call")


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    turns: list[Turn]
    stream: bool
    max_tokens: int
    temperature: float | None
    include_usage: bool
    session_id: UUID | None

    @property
    def prompt_chars(self) -> int:
        return sum(len(turn.content) for turn in self.turns)

    @property
    def last_user_content(self) -> str:
        return next((t.content for t in reversed(self.turns) if t.role == "user"), "")


def _content(value, index: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise invalid(
                    "Only text content parts are supported.", param=f"messages.[{index}].content", code="invalid_type"
                )
            parts.append(part["text"])
        return "".join(parts)
    raise invalid(
        f"Invalid type for 'messages.[{index}].content': expected a string or an array of text parts.",
        param=f"messages.[{index}].content",
        code="invalid_type",
    )


def _turns(messages) -> list[Turn]:
    if not isinstance(messages, list):
        raise invalid("Invalid type for 'messages': expected an array.", param="messages", code="invalid_type")
    if not messages:
        raise invalid("'messages' must contain at least one message.", param="messages", code="empty_array")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(
                f"Invalid type for 'messages.[{index}]': expected an object.",
                param=f"messages.[{index}]",
                code="invalid_type",
            )
        role = message.get("role")
        if role not in _ROLES:
            raise invalid(
                f"Invalid value for 'messages.[{index}].role': expected one of {', '.join(sorted(_ROLES))}.",
                param=f"messages.[{index}].role",
                code="invalid_value",
            )
        content = _content(message.get("content"), index)
        if "\x00" in content:
            raise invalid("Message content must not contain NUL characters.", param=f"messages.[{index}].content")
        turns.append(Turn(role=_ROLES[role], content=content))
    return turns


def _integer(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"Invalid type for '{name}': expected an integer.", param=name, code="invalid_type")
    if value < 1:
        raise invalid(f"Invalid '{name}': must be at least 1.", param=name, code="invalid_value")
    cap = settings.CHORUS_COMPLETIONS_MAX_TOKENS
    if value > cap:
        raise invalid(
            f"Invalid '{name}': {value} is more than this server allows ({cap}).", param=name, code="invalid_value"
        )
    return value


def parse_completion_request(raw: bytes) -> CompletionRequest:
    """Validate a request body. Raises CompletionError (400) with OpenAI's message style
    and `param` naming the offending field."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise invalid(
            "We could not parse the JSON body of your request. The body must be a JSON object.", code="invalid_json"
        )
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("You must provide a model parameter.", param="model", code="invalid_type")
    turns = _turns(body.get("messages"))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("Invalid type for 'stream': expected a boolean.", param="stream", code="invalid_type")
    for name in _REFUSED:
        if body.get(name) not in (None, []):
            raise invalid(f"'{name}' is not supported by this server.", param=name, code="unsupported_parameter")
    n = body.get("n")
    if n not in (None, 1):
        raise invalid("Only n=1 is supported.", param="n", code="unsupported_value")
    max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    temperature = body.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2
    ):
        raise invalid(
            "Invalid 'temperature': expected a number from 0 to 2.", param="temperature", code="invalid_value"
        )
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise invalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                param="stream_options",
                code="invalid_value",
            )
        if not isinstance(options, dict):
            raise invalid("Invalid type for 'stream_options': expected an object.", param="stream_options")
        include_usage = options.get("include_usage", False)
        if not isinstance(include_usage, bool):
            raise invalid(
                "Invalid type for 'stream_options.include_usage': expected a boolean.",
                param="stream_options.include_usage",
                code="invalid_type",
            )
    session_id = None
    if body.get("session") is not None:
        try:
            session_id = UUID(str(body["session"])) if isinstance(body["session"], str) else None
        except ValueError:
            session_id = None
        if session_id is None:
            raise invalid("Invalid 'session': expected a session id (a UUID).", param="session", code="invalid_value")
    return CompletionRequest(
        model=model,
        turns=turns,
        stream=stream,
        max_tokens=max_tokens or settings.CHORUS_COMPLETIONS_MAX_TOKENS,
        temperature=float(temperature) if temperature is not None else None,
        include_usage=include_usage,
        session_id=session_id,
    )


__all__ = ["CompletionError", "CompletionRequest", "parse_completion_request"]
