"""REST calls of the benchmark (httpx, keep-alive pools) and paced publishing.

Publishing goes through the public API, `POST /api/v1/sessions/{id}/messages/`, so a
published event costs what a real one costs (auth, validation, transaction, insert,
broadcast). The message content is `bench@<unix time>`: the wall-clock moment just before
the request was written, which the subscribers read back to measure publish-to-receive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import httpx


class ApiError(RuntimeError):
    pass


class Api:
    """One keep-alive connection pool per server process, for one user's token."""

    def __init__(self, urls: Sequence[str], token: str, connections: int = 16) -> None:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        headers = {"Authorization": f"Token {token}"}
        self.clients = [httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30.0) for url in urls]

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()

    def client(self, index: int) -> httpx.AsyncClient:
        return self.clients[index % len(self.clients)]

    async def _json(self, index: int, method: str, path: str, expect: int, **kwargs) -> dict:
        response = await self.client(index).request(method, path, **kwargs)
        if response.status_code != expect:
            raise ApiError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else {}

    async def create_session(self, title: str, index: int = 0) -> dict:
        return await self._json(index, "POST", "/api/v1/sessions/", 201, json={"title": title})

    async def add_member(self, session: str, username: str, role: str = "viewer", index: int = 0) -> dict:
        body = {"username": username, "role": role}
        return await self._json(index, "POST", f"/api/v1/sessions/{session}/members/", 201, json=body)

    async def last_event_id(self, session: str, index: int = 0) -> int:
        return int((await self._json(index, "GET", f"/api/v1/sessions/{session}/", 200))["lastEventId"])

    async def post_message(self, session: str, content: str, index: int = 0) -> dict:
        body = {"content": content, "reply": False}
        return await self._json(index, "POST", f"/api/v1/sessions/{session}/messages/", 201, json=body)

    async def regenerate(self, session: str, message: str, index: int = 0) -> dict:
        body = {"sessionId": session, "messageId": message}
        return await self._json(index, "POST", "/api/v1/chat_actions/regenerate", 202, json=body)

    async def regeneration(self, regeneration: str, index: int = 0) -> dict:
        return await self._json(index, "GET", f"/api/v1/regenerations/{regeneration}/", 200)


def stamp() -> str:
    return f"bench@{time.time():.6f}"


async def bounded(concurrency: int, jobs: Sequence[Callable[[], Awaitable]]) -> list:
    """Run `jobs` with at most `concurrency` at a time; results in order (exceptions raise)."""
    semaphore = asyncio.Semaphore(max(1, concurrency))

    async def run(job):
        async with semaphore:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


@dataclass
class PublishResult:
    requested: int
    ok: int = 0
    errors: list[str] = field(default_factory=list)
    request_ms: list[float] = field(default_factory=list)
    started: float = 0.0  # wall clock
    finished: float = 0.0  # wall clock, last response
    late_ms: float = 0.0  # worst lag of a send behind its schedule
    per_session: dict[str, int] = field(default_factory=dict)  # successful posts (one event each)

    @property
    def duration(self) -> float:
        return max(1e-9, self.finished - self.started)

    def summary(self) -> dict:
        ordered = sorted(self.request_ms)
        pick = (lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)) if ordered else None
        return {
            "requested": self.requested,
            "ok": self.ok,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "achieved_rate": round(self.ok / self.duration, 1),
            "post_ms_p50": pick(0.5) if pick else None,
            "post_ms_p99": pick(0.99) if pick else None,
            "worst_schedule_lag_ms": round(self.late_ms, 1),
        }


async def paced_publish(
    api: Api,
    sessions: Sequence[str],
    count: int,
    rate: float,
    max_in_flight: int = 64,
    stop: asyncio.Event | None = None,
) -> PublishResult:
    """Post `count` messages at `rate` per second, round-robin over `sessions` and over the
    server processes. Each send is scheduled at start + i / rate and does not wait for the
    previous response, so a slow response does not slow the offered rate (up to
    `max_in_flight` outstanding requests)."""
    loop = asyncio.get_running_loop()
    result = PublishResult(requested=count)
    in_flight = asyncio.Semaphore(max_in_flight)
    tasks = []

    async def one(i: int) -> None:
        try:
            sent = time.perf_counter()
            session = sessions[i % len(sessions)]
            await api.post_message(session, stamp(), index=i)
            result.request_ms.append((time.perf_counter() - sent) * 1000)
            result.ok += 1
            result.per_session[session] = result.per_session.get(session, 0) + 1
            result.finished = time.time()
        except Exception as exc:
            result.errors.append(repr(exc))
        finally:
            in_flight.release()

    result.started = time.time()
    origin = loop.time()
    for i in range(count):
        if stop is not None and stop.is_set():
            result.requested = i
            break
        delay = origin + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await in_flight.acquire()
        result.late_ms = max(result.late_ms, (loop.time() - origin - i / rate) * 1000)
        tasks.append(asyncio.ensure_future(one(i)))
    if tasks:
        await asyncio.gather(*tasks)
    return result


async def closed_loop_publish(api: Api, sessions: Sequence[str], count: int, writers: int) -> PublishResult:
    """`writers` concurrent writers, each posting to its own session (writer i to
    sessions[i % len(sessions)], through server process i mod N) as fast as the server
    answers: the next post leaves when the previous one is answered. `count` posts in all."""
    result = PublishResult(requested=count)
    next_index = 0

    async def writer(w: int) -> None:
        nonlocal next_index
        session = sessions[w % len(sessions)]
        while next_index < count:
            next_index += 1
            try:
                sent = time.perf_counter()
                await api.post_message(session, stamp(), index=w)
                result.request_ms.append((time.perf_counter() - sent) * 1000)
                result.ok += 1
                result.per_session[session] = result.per_session.get(session, 0) + 1
                result.finished = time.time()
            except Exception as exc:
                result.errors.append(repr(exc))

    result.started = time.time()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    return result
