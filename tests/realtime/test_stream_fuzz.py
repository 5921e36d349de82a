"""Fuzzing `GET /sse/sessions/{id}/` (CONTRACT §5) through the real ASGI app: odd and huge
Last-Event-ID values in the header and the query, bad encodings, unknown, repeated and
many parameters, very long URLs, malformed session ids and credentials. The only answers
are the contract's: a 200 stream that resumes where the id says, or a JSON 400 / 401 /
404; never a 500, a 503, an HTML page or a request that hangs.

Explicit cases first, then Hypothesis (bounded and deterministic) against an oracle that
restates the contract: an id is a non-negative integer in ASCII digits (the header's
surrounding whitespace is not part of its value); the header wins over the query
parameter; of repeated query parameters the last counts; a blank query parameter is as
if absent; an id above the newest means the newest.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import quote

import pytest
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions_app import services
from tests.conftest import token_for
from tests.support.asgi import ASGIStream

pytestmark = [pytest.mark.django_db(transaction=True)]

TIMEOUT = 5.0
OWS = b" \t"


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes, frames: list) -> None:
        self.status, self.headers, self.body, self.frames = status, headers, body, frames

    @property
    def json(self) -> dict:
        return json.loads(self.body)


async def request(
    app, path: str, *, headers: list[tuple[bytes, bytes]] = (), query: bytes = b"", replay: bool = False
) -> Answer:
    """One request with exactly these raw headers and query string. Fails the test if the
    app raises (a server would answer 500) or answers nothing within TIMEOUT. For a
    stream: reads the opening frames (and the first replayed event if `replay`), then
    disconnects."""
    stream = ASGIStream(app, "/")
    stream.scope.update(
        path=path, raw_path=quote(path).encode(), query_string=query, headers=[(k.lower(), v) for k, v in headers]
    )
    await stream._incoming.put({"type": "http.request", "body": b"", "more_body": False})
    task = stream.task = asyncio.ensure_future(app(stream.scope, stream._receive, stream._send))
    started = asyncio.ensure_future(stream.started.wait())
    try:
        await asyncio.wait({task, started}, timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and not stream.started.is_set():
            task.result()  # raises what the app raised
            pytest.fail("the app returned without answering")
        assert stream.started.is_set(), f"no answer within {TIMEOUT} s"
        frames = []
        if stream.status == 200:
            frames.append(await stream.next_event(TIMEOUT))  # `connection`
            if replay:
                frames.append(await stream.next_event(TIMEOUT))
        else:
            await asyncio.wait_for(stream.finished.wait(), TIMEOUT)
        headers = {name.lower(): value for name, value in stream.headers.items()}
        return Answer(stream.status, headers, stream.body, frames)
    finally:
        started.cancel()
        await stream.disconnect()


def assert_json_refusal(answer: Answer, status: int) -> dict:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in body["detail"]
    return body


@pytest.fixture
async def ctx(collab, alice, bob):
    """A session whose newest event id is `newest`, and alice's (the owner's) credentials."""

    @database_sync_to_async
    def prepare():
        for n in range(3):
            services.message_create(session=collab, author=bob, content=f"message {n}")
        collab.refresh_from_db()
        return collab.last_event_id, token_for(alice)

    newest, token = await prepare()
    return {
        "path": f"/sse/sessions/{collab.pk}/",
        "newest": newest,
        "auth": (b"authorization", f"Token {token}".encode()),
    }


def expected_resume(header: bytes | None, query_values: list[str]) -> int | str | None:
    """The contract's reading of a request: the id to resume after, None (live only), or
    "400"."""
    if header is not None:
        raw = header.strip(OWS).decode("latin-1")
    else:
        given_values = [v for v in query_values if v != ""]
        if not given_values:
            return None
        raw = given_values[-1]
    if not raw or not all("0" <= c <= "9" for c in raw):
        return "400"
    digits = raw.lstrip("0")
    return int(digits or "0") if len(digits) < 30 else 10**30


async def check(app, ctx, header: bytes | None, query: bytes, query_values: list[str]) -> None:
    headers = [ctx["auth"]] + ([(b"last-event-id", header)] if header is not None else [])
    resume = expected_resume(header, query_values)
    replays = isinstance(resume, int) and resume < ctx["newest"]
    answer = await request(app, ctx["path"], headers=headers, query=query, replay=replays)
    if resume == "400":
        assert "Last-Event-ID" in assert_json_refusal(answer, 400)["detail"]
        return
    assert answer.status == 200, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == "text/event-stream"
    connected = answer.frames[0]
    assert connected.event == "connection" and connected.json["lastEventId"] == ctx["newest"]
    if replays:
        assert answer.frames[1].id == resume + 1  # the replay starts right after the id


# --- explicit cases: the Last-Event-ID header -------------------------------------------------
@pytest.mark.parametrize(
    "header",
    [
        b"-1",
        b"-0",
        b"1e9",
        b"1E3",
        b"1" + b"0" * 30,  # 10**30: above the newest, so the newest
        b"9" * 5000,  # past Python's 4300-digit int() limit: still above the newest
        b"0" * 5000 + b"2",  # 2
        b"+5",
        b" 2 ",
        b"\t1",
        b"2 3",
        b"1.0",
        b"0x10",
        b"1_000",
        "١٢".encode(),  # Arabic-Indic digits: not ASCII digits
        "١٢".encode("utf-16"),
        "\uff13".encode(),  # fullwidth 3
        b"\xff\xfe\xfd",  # not UTF-8
        b"2\xa0",  # NBSP (latin-1) after the digits
        b"",
        b" ",
        b"0",
        b"1",
        b"00001",
        b"nan",
        b"Infinity",
        b"2\x0b",  # vertical tab: Python's strip() would remove it, HTTP's does not
    ],
    ids=lambda v: repr(v)[:40],
)
async def test_odd_last_event_id_headers_get_a_stream_or_400(asgi_app, ctx, header):
    await check(asgi_app, ctx, header, b"", [])


# --- explicit cases: the query string -----------------------------------------------------------
@pytest.mark.parametrize(
    "query, values",
    [
        (b"lastEventId=%FF%FE", ["\ufffd\ufffd"]),  # bad UTF-8, percent-encoded
        (b"lastEventId=\xff\xfe", ["\xff\xfe"]),  # raw non-ASCII bytes
        (b"lastEventId=%00", ["\x00"]),
        (b"lastEventId=1%00", ["1\x00"]),
        (b"lastEventId=2%0A", ["2\n"]),  # a trailing newline is not part of a number
        (b"lastEventId=%2B2", ["+2"]),
        (b"lastEventId=+2", [" 2"]),  # '+' is a space in a query string
        (b"lastEventId=%D9%A1%D9%A2", ["١٢"]),
        (b"lastEventId=%", ["%"]),
        (b"lastEventId=%zz", ["%zz"]),
        (b"lastEventId=1&lastEventId=2", ["1", "2"]),  # repeated: the last counts
        (b"lastEventId=2&lastEventId=x", ["2", "x"]),
        (b"lastEventId=x&lastEventId=2", ["x", "2"]),
        (b"lastEventId=", []),  # blank: as if absent
        (b"lastEventId", []),
        (b"lasteventid=abc&LASTEVENTID=abc", []),  # names are case-sensitive
        (b"&&&=&=x&lastEventId=1&&", ["1"]),
        (b"unknown=1&other=%FF&lastEventId=2", ["2"]),
        (b"a=1;lastEventId=x", []),  # ';' is not a separator
        (b"lastEventId=" + b"9" * 5000, ["9" * 5000]),
    ],
    ids=lambda v: repr(v)[:40],
)
async def test_odd_query_strings_get_a_stream_or_400(asgi_app, ctx, query, values):
    await check(asgi_app, ctx, None, query, values)


async def test_the_header_wins_over_a_bad_query_parameter_and_the_reverse(asgi_app, ctx):
    await check(asgi_app, ctx, b"1", b"lastEventId=bad", ["bad"])
    await check(asgi_app, ctx, b"bad", b"lastEventId=1", ["1"])


async def test_many_parameters_and_very_long_urls(asgi_app, ctx):
    many = b"&".join(b"p%d=%d" % (n, n) for n in range(20_000)) + b"&lastEventId=1"
    await check(asgi_app, ctx, None, many, ["1"])
    long_value = b"x=" + b"A" * 1_000_000 + b"&lastEventId=2"
    await check(asgi_app, ctx, None, long_value, ["2"])
    repeated = b"&".join([b"lastEventId=1"] * 10_000)
    await check(asgi_app, ctx, None, repeated, ["1"])


# --- the session id and the credentials ------------------------------------------------------
MALFORMED_SESSION_IDS = [
    "not-a-uuid",
    "123",
    "00000000-0000-0000-0000-00000000000g",
    "{00000000-0000-0000-0000-000000000001}",
    "00000000000000000000000000000001",  # a uuid without dashes
    "x" * 10_000,
    "%00",
    "..",
    "١٢",
    " ",
]


@pytest.mark.parametrize("session_id", MALFORMED_SESSION_IDS, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("debug", [False, True], ids=["no-debug", "debug"])
async def test_malformed_session_ids_are_a_json_404(asgi_app, ctx, settings, session_id, debug):
    settings.DEBUG = debug
    answer = await request(asgi_app, f"/sse/sessions/{session_id}/", headers=[ctx["auth"]])
    assert assert_json_refusal(answer, 404) == {"detail": "Not found."}


async def test_an_uppercase_uuid_is_a_json_404(asgi_app, ctx):
    # The API hands out lowercase ids; the stream's route matches those only.
    answer = await request(
        asgi_app, ctx["path"].upper().replace("/SSE/SESSIONS/", "/sse/sessions/"), headers=[ctx["auth"]]
    )
    assert_json_refusal(answer, 404)


async def test_an_unknown_session_and_a_non_members_session_are_404(asgi_app, ctx, outsider):
    answer = await request(asgi_app, f"/sse/sessions/{uuid.uuid4()}/", headers=[ctx["auth"]])
    assert_json_refusal(answer, 404)
    token = await database_sync_to_async(token_for)(outsider)
    answer = await request(asgi_app, ctx["path"], headers=[(b"authorization", f"Token {token}".encode())])
    assert_json_refusal(answer, 404)


@pytest.mark.parametrize(
    "headers, query",
    [
        ([], b""),
        ([(b"authorization", b"Token")], b""),
        ([(b"authorization", b"Token ")], b""),
        ([(b"authorization", b"Token not-a-token")], b""),
        ([(b"authorization", b"Token \xff\xfe")], b""),
        ([(b"authorization", b"Token a\x00b")], b""),  # PostgreSQL cannot even look it up
        ([(b"authorization", b"Bearer \x7f")], b""),
        ([(b"authorization", b"Token " + b"a" * 100_000)], b""),
        ([(b"authorization", b"Bearer a b c")], b""),
        ([(b"authorization", b"Basic YWxpY2U6cHc=")], b""),
        ([(b"authorization", b"\xff")], b""),
        ([], b"ticket=garbage"),
        ([], b"ticket=%00%FF"),
        ([], b"ticket=" + b"A" * 100_000),
        ([], b"ticket=&ticket="),
        ([(b"cookie", b"sessionid=garbage")], b""),
        ([(b"cookie", b'sessionid="\\000\\377abcdefgh"')], b""),  # octal escapes: a NUL in the key
        ([(b"cookie", b"sessionid=" + b"x" * 10_000)], b""),
        ([(b"cookie", b"\xff\xfe=\xfd; sessionid")], b""),
    ],
    ids=lambda v: repr(v)[:40],
)
async def test_bad_credentials_are_a_json_401(asgi_app, ctx, headers, query):
    answer = await request(asgi_app, ctx["path"], headers=headers, query=query)
    assert_json_refusal(answer, 401)


# --- generated cases --------------------------------------------------------------------------
# Header values as servers pass them on (RFC 9110 field values: visible ASCII, obs-text,
# spaces and tabs), biased towards digits and signs so that many are near-misses.
header_values = st.one_of(
    st.none(),
    st.binary(max_size=40).map(lambda b: bytes(c for c in b if c in b"\t" or 0x20 <= c != 0x7F)),
    st.text(alphabet="0123456789 +-.eE\t", max_size=25).map(str.encode),
    st.integers(min_value=-(10**40), max_value=10**40).map(lambda n: str(n).encode()),
    st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=5).map(lambda s: s.encode()),
)
query_values = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="0123456789 +-", max_size=10),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
)
other_parameters = st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=5)


@settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(header=header_values, values=st.lists(query_values, max_size=3), others=other_parameters)
async def test_generated_resume_points_get_only_the_contracts_answers(asgi_app, ctx, header, values, others):
    pairs = [("lastEventId", v) for v in values] + [(k, v) for k, v in others if k != "lastEventId"]
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in pairs).encode()
    await check(asgi_app, ctx, header, query, values)
