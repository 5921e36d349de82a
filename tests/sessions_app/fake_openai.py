"""A small OpenAI-compatible streaming server for tests, on 127.0.0.1 and the test's loop.

`POST /v1/chat/completions` with `"stream": true` answers like real servers do: chunked
`text/event-stream` with `chat.completion.chunk` objects, then `data: [DONE]`. The
requested model picks the behaviour:

- `normal`: the chunks of `FakeOpenAI.answer`, a chunk with `finish_reason` ("length"
  if the request's `max_tokens` cut the answer short), a usage chunk if the request asked
  for it (`stream_options.include_usage`: `prompt_tokens` is `FakeOpenAI.prompt_tokens`),
  then [DONE];
- `error-mid`: two chunks, then an `{"error": …}` event (as OpenAI sends mid-stream);
- `drop-mid`: two chunks, then the connection is closed without finishing the body;
- `hang`: the response headers, then nothing at all;
- `hang-mid`: one chunk, then nothing;
- `slow`: a chunk every 20 ms for ever (until the client goes away);
- `count-N`: N chunks (`tok0 `, `tok1 `, …) as fast as the client reads them, then
  [DONE] (for measurements);
- `status-429` / `status-500`: an error status with an OpenAI-style JSON body (429 with
  `Retry-After: 7`).

`requests` records each request's headers and JSON body; `disconnected` is set when a
client closes a response the server was still streaming.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time


class FakeOpenAI:
    answer = ["Bonjour", " — here ", "is the ", "answer ", "with émoji 👩‍👩‍👧", " and ", "more", "."]
    prompt_tokens = 11

    def __init__(self) -> None:
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.requests: list[dict] = []
        self.disconnected = asyncio.Event()
        self.disconnected_at: float | None = None
        self.chunks_sent = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def __aenter__(self) -> FakeOpenAI:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    # --- HTTP ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = {"method": method, "path": path, "headers": headers, "json": json.loads(body or b"{}")}
            self.requests.append(request)
            await self._respond(request, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _respond(self, request, reader, writer) -> None:
        model = request["json"].get("model", "normal")
        if request["path"] != "/v1/chat/completions" or request["method"] != "POST":
            return self._plain(writer, 404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        if model.startswith("status-"):
            code = int(model.split("-", 1)[1])
            headers = {"Retry-After": "7"} if code == 429 else {}
            body = {"error": {"message": "upstream says no", "type": "server_error"}}
            return self._plain(writer, code, body, headers)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            b"Cache-Control: no-cache\r\n\r\n"
        )
        await writer.drain()
        watcher = asyncio.ensure_future(self._watch_disconnect(reader))
        try:
            if model == "normal":
                limit = request["json"].get("max_tokens") or len(self.answer)
                for piece in self.answer[:limit]:
                    await self._chunk(writer, piece)
                await self._chunk(writer, None, finish_reason="length" if limit < len(self.answer) else "stop")
                if (request["json"].get("stream_options") or {}).get("include_usage"):
                    usage = {
                        "prompt_tokens": self.prompt_tokens,
                        "completion_tokens": min(limit, len(self.answer)),
                        "total_tokens": self.prompt_tokens + min(limit, len(self.answer)),
                    }
                    await self._chunk(writer, None, usage=usage)
                await self._send(writer, b"data: [DONE]\n\n")
                await self._send(writer, b"")  # the final empty chunk
            elif model.startswith("count-"):
                for n in range(int(model.split("-", 1)[1])):
                    await self._chunk(writer, f"tok{n} ")
                await self._chunk(writer, None, finish_reason="stop")
                await self._send(writer, b"data: [DONE]\n\n")
                await self._send(writer, b"")
            elif model == "error-mid":
                for piece in self.answer[:2]:
                    await self._chunk(writer, piece)
                error = {"error": {"message": "internal failure at token 3", "type": "server_error", "code": None}}
                await self._send(writer, f"data: {json.dumps(error)}\n\n".encode())
                await self._send(writer, b"")
            elif model == "drop-mid":
                for piece in self.answer[:2]:
                    await self._chunk(writer, piece)
                writer.transport.abort()
            elif model == "hang":
                await asyncio.sleep(3600)
            elif model == "hang-mid":
                await self._chunk(writer, self.answer[0])
                await asyncio.sleep(3600)
            elif model == "slow":
                n = 0
                while True:
                    await self._chunk(writer, f"tick{n} ")
                    n += 1
                    await asyncio.wait([watcher], timeout=0.02)
                    if watcher.done():
                        return
        finally:
            watcher.cancel()

    async def _watch_disconnect(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            await reader.read()  # returns b"" when the client closes its side
        self.disconnected_at = time.monotonic()
        self.disconnected.set()

    def _plain(self, writer, code: int, body: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        writer.write(
            f"HTTP/1.1 {code} Error\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"{extra}Connection: close\r\n\r\n".encode()
            + data
        )

    async def _chunk(
        self, writer, text: str | None, *, finish_reason: str | None = None, usage: dict | None = None
    ) -> None:
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "fake",
            "choices": [],
        }
        if usage is not None:
            payload["usage"] = usage
        else:
            delta = {"content": text} if text is not None else {}
            payload["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
        await self._send(writer, f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode())
        if text is not None:
            self.chunks_sent += 1

    async def _send(self, writer, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()
