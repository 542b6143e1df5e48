"""Real servers on 127.0.0.1 for the tests: a uvicorn thread runner, a recording fake Amp
upstream, and a fake model backend that speaks the Anthropic, OpenAI and Gemini formats.

The fakes put on the wire what real servers do, not what is easiest: header names in canonical
case (``Content-Type``, as Go's net/http writes them) and a ``Date``, or, in the ``nginx`` style,
nginx's own headers and chunked framing. uvicorn's default (httptools) protocol lowercases every
header name it writes, so the fakes run on uvicorn's h11 protocol, which keeps the names as given.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "amp-traffic"
RESPONSES = FIXTURES / "responses"

Handler = Callable[[Scope, Receive, Send, "Recorded"], Awaitable[None]]


class _QuickServer(uvicorn.Server):
    """uvicorn's server, noticing ``should_exit`` within milliseconds instead of its 0.1 s tick:
    the tests start and stop a thousand servers."""

    async def main_loop(self) -> None:
        counter = 0  # uvicorn's own tick count (every 0.1 s): it stamps the Date header by it
        if await self.on_tick(counter):
            return
        for waits in itertools.count(1):
            await asyncio.sleep(0.005)
            if self.should_exit:
                return
            if waits % 20 == 0:
                counter += 1
                if await self.on_tick(counter):
                    return


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1 in a thread, like ``ampbridge serve`` does."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", **config: Any) -> None:
        self.app = app
        self.host = host
        # A fake writes its own Date (and Server, as nginx), and its header names' case must survive.
        as_fake = {"http": "h11", "date_header": False, "server_header": False}
        # log_config=None: uvicorn's records propagate to the root logger, where caplog sees them.
        self.config = {
            "lifespan": "auto",
            "log_config": None,
            "proxy_headers": False,
            **(as_fake if isinstance(app, RecordingServer) else {}),
            **config,
        }

    def __enter__(self) -> ServerThread:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((self.host, 0))
        self.port = self.socket.getsockname()[1]
        self.server = _QuickServer(uvicorn.Config(self.app, host=self.host, port=self.port, **self.config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass
class Recorded:
    """One request a fake server received."""

    method: str
    path: str
    raw_path: bytes
    query: bytes
    headers: list[tuple[str, str]]
    body: bytes = b""
    client: tuple[str, int] | None = None
    events: list[str] = field(default_factory=list)  # what happened after: "disconnect", ...

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)


async def read_all(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    raw = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def stream(
    send: Send, chunks: list[bytes], content_type: str = "text/event-stream", status: int = 200
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type.encode())],
        }
    )
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def stream_until_disconnect(first_event: bytes, saw_disconnect: threading.Event) -> Handler:
    """A handler that sends one SSE event, then holds the stream open until the client leaves."""

    async def handle(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": first_event, "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        saw_disconnect.set()

    return handle


def sse_events(text: str) -> list[bytes]:
    """Split an SSE fixture into its events (each with its blank line)."""
    return [event.encode() + b"\n\n" for event in text.strip().split("\n\n")]


HEADER_STYLES = ("go", "nginx")


def canonical(name: bytes) -> bytes:
    """A header name as Go's net/http writes it: ``x-served-by`` -> ``X-Served-By``."""
    return b"-".join(part[:1].upper() + part[1:].lower() for part in name.split(b"-"))


def styled_headers(status: int, headers: list[tuple[bytes, bytes]], style: str) -> list[tuple[bytes, bytes]]:
    """A reply's headers as the real server of ``style`` sends them. ``go``: canonical names and a
    ``Date``. ``nginx``: ``Server: nginx``, ``Date``, the body chunked instead of a length, and
    ``Connection: keep-alive``."""
    date = formatdate(usegmt=True).encode()
    named = [(canonical(name), value) for name, value in headers]
    if style == "go":
        return [*named, (b"Date", date)]
    own = {b"Server", b"Date", b"Content-Length", b"Connection", b"Transfer-Encoding"}
    bodiless = status < 200 or status in (204, 304)
    return [
        (b"Server", b"nginx"),
        (b"Date", date),
        *[(name, value) for name, value in named if name not in own],
        *([] if bodiless else [(b"Transfer-Encoding", b"chunked")]),
        (b"Connection", dict(named).get(b"Connection", b"keep-alive")),  # "close" when a handler closes
    ]


class RecordingServer:
    """An ASGI app that records every request and answers with a handler chosen by path.

    Handlers are ``async (scope, receive, send, recorded)``; the request body is already read into
    ``recorded.body`` unless the handler's path was registered with ``stream_body=True``. Replies
    go out in ``header_style`` (one of ``HEADER_STYLES``), whatever case the handler used.
    """

    def __init__(self, name: str, header_style: str = "go") -> None:
        self.name = name
        self.header_style = header_style
        self.requests: list[Recorded] = []
        self.routes: list[tuple[Callable[[str, str], bool], Handler, bool]] = []
        self.websockets: list[Recorded] = []
        self.keep_records = True  # a soak turns this off: a minute of traffic is kept nowhere
        self.lock = threading.Lock()

    def route(
        self, match: Callable[[str, str], bool], handler: Handler, *, stream_body: bool = False
    ) -> None:
        self.routes.insert(0, (match, handler, stream_body))

    def freeze(self) -> RecordingServer:
        """Remember the current routes as the ones ``reset`` goes back to."""
        self.default_routes = list(self.routes)
        return self

    def reset(self) -> None:
        """Forget what was received and any routes a test added."""
        with self.lock:
            self.requests.clear()
            self.websockets.clear()
            self.routes = list(getattr(self, "default_routes", self.routes))
            self.keep_records = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        send = self._styled(send)
        recorded = Recorded(
            method=scope.get("method", "WEBSOCKET"),
            path=scope["path"],
            raw_path=scope.get("raw_path") or scope["path"].encode(),
            query=scope.get("query_string", b""),
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            client=scope.get("client"),
        )
        if scope["type"] == "websocket":
            with self.lock:
                self.websockets.append(recorded)
            await self.websocket(scope, receive, send, recorded)
            return
        for match, handler, stream_body in self.routes:
            if match(scope["method"], scope["path"]):
                if not stream_body:
                    recorded.body = await read_all(receive)
                if self.keep_records:
                    with self.lock:
                        self.requests.append(recorded)
                await handler(scope, receive, send, recorded)
                return
        recorded.body = await read_all(receive)
        with self.lock:
            self.requests.append(recorded)
        await respond(send, 404, json.dumps({"error": f"{self.name}: no route"}).encode())

    def _styled(self, send: Send) -> Send:
        async def styled_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": styled_headers(message["status"], list(message["headers"]), self.header_style),
                }
            await send(message)

        return styled_send

    async def websocket(self, scope: Scope, receive: Receive, send: Send, recorded: Recorded) -> None:
        """Echo server: accepts the first offered subprotocol, echoes frames prefixed with
        ``echo:``, closes with 4001 when told ``close-me``; records how the client closed."""
        await receive()
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                recorded.events.append(f"disconnect:{message.get('code')}")
                return
            if message.get("text") == "close-me":
                await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
                recorded.events.append("closed:4001")
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": b"echo:" + message["bytes"]})


# --- the fake Amp upstream ----------------------------------------------------------------


def fixture_response(name: str, model: str = "") -> bytes:
    return (RESPONSES / name).read_text().replace("{{model}}", model).encode()


def amp_upstream() -> RecordingServer:
    """Answers Amp's control-plane RPCs and model calls the way the captured session needs."""
    server = RecordingServer("fake-amp")

    async def internal(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        name = rec.query.decode().split("&")[0]
        path = RESPONSES / "internal" / f"{name}.json"
        body = path.read_bytes() if path.exists() else b'{"ok":true,"result":null}'
        await respond(send, 200, body)

    async def anything(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, json.dumps({"upstream": True, "path": rec.path}).encode())

    server.route(lambda m, p: True, anything)
    server.route(lambda m, p: p == "/api/internal", internal)
    server.route(lambda m, p: p.startswith("/api/provider/"), model_handler("amp-upstream"))
    return server.freeze()


# --- the fake model backend -----------------------------------------------------------------


def model_handler(served_by: str, *, gate: threading.Event | None = None) -> Handler:
    """Answers model calls in each wire format, streaming when asked. With ``gate``, a stream
    sends its first event and then waits for the test to set the gate before the rest."""

    async def handle(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        path = rec.path
        try:
            payload = json.loads(rec.body)
        except (ValueError, RecursionError):
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        model = (
            payload.get("model")
            if isinstance(payload.get("model"), str)
            else path.rsplit("/models/", 1)[-1].split(":")[0]
        )
        marker = [(b"x-served-by", served_by.encode())]
        if path.endswith("/messages/count_tokens"):
            await respond(send, 200, b'{"input_tokens": 42}', headers=marker)
        elif path.endswith("/messages"):
            if payload.get("stream"):
                await _stream(
                    send, sse_events(fixture_response("anthropic_messages.sse", model).decode()), gate, marker
                )
            else:
                await respond(send, 200, fixture_response("anthropic_title.json", model), headers=marker)
        elif path.endswith("/responses"):
            if payload.get("stream"):
                await _stream(
                    send, sse_events(fixture_response("openai_responses.sse", model).decode()), gate, marker
                )
            else:
                body = {
                    "id": "resp_1",
                    "object": "response",
                    "created_at": 0,
                    "status": "completed",
                    "model": model,
                    "output": [
                        {
                            "id": "msg_1",
                            "type": "message",
                            "status": "completed",
                            "role": "assistant",
                            "content": [{"type": "output_text", "text": "OK", "annotations": []}],
                        }
                    ],
                    "usage": {
                        "input_tokens": 1,
                        "output_tokens": 1,
                        "total_tokens": 2,
                        "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens_details": {"reasoning_tokens": 0},
                    },
                }
                await respond(send, 200, json.dumps(body).encode(), headers=marker)
        elif path.endswith("/chat/completions"):
            if payload.get("stream"):
                chunks = [
                    {
                        "id": "c1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "delta": {"role": "assistant", "content": "O"},
                                "finish_reason": None,
                            }
                        ],
                    },
                    {
                        "id": "c1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": model,
                        "choices": [{"index": 0, "delta": {"content": "K"}, "finish_reason": "stop"}],
                    },
                ]
                events = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks] + [
                    b"data: [DONE]\n\n"
                ]
                await _stream(send, events, gate, marker)
            else:
                body = {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "OK"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                await respond(send, 200, json.dumps(body).encode(), headers=marker)
        elif path.endswith("/completions"):
            body = {
                "id": "t1",
                "object": "text_completion",
                "created": 0,
                "model": model,
                "choices": [{"index": 0, "text": "OK", "finish_reason": "stop", "logprobs": None}],
            }
            await respond(send, 200, json.dumps(body).encode(), headers=marker)
        elif ":streamGenerateContent" in path:
            reply = json.loads(fixture_response("google_generate.json"))
            reply["modelVersion"] = model
            first = dict(
                reply,
                candidates=[{"content": {"role": "model", "parts": [{"text": "The secret "}]}, "index": 0}],
            )
            events = [
                b"data: " + json.dumps(first).encode() + b"\r\n\r\n",
                b"data: " + json.dumps(reply).encode() + b"\r\n\r\n",
            ]
            await _stream(send, events, gate, marker)
        elif ":generateContent" in path:
            reply = json.loads(fixture_response("google_generate.json"))
            reply["modelVersion"] = model
            await respond(send, 200, json.dumps(reply).encode(), headers=marker)
        elif ":countTokens" in path:
            await respond(send, 200, b'{"totalTokens": 42}', headers=marker)
        else:
            await respond(send, 404, b'{"error":"no such model route"}', headers=marker)

    return handle


async def _stream(
    send: Send, events: list[bytes], gate: threading.Event | None, headers: list[tuple[bytes, bytes]]
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *headers],
        }
    )
    for index, event in enumerate(events):
        await send({"type": "http.response.body", "body": event, "more_body": True})
        if index == 0 and gate is not None:
            await anyio.to_thread.run_sync(gate.wait, 10)
    await send({"type": "http.response.body", "body": b""})


def model_backend(name: str, models: list[str], *, gate: threading.Event | None = None) -> RecordingServer:
    """A fake provider API: model calls, and its model list in all three formats."""
    server = RecordingServer(name)

    async def openai_list(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(
            send,
            200,
            json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]}).encode(),
        )

    async def gemini_list(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, json.dumps({"models": [{"name": f"models/{m}"} for m in models]}).encode())

    server.route(lambda m, p: True, model_handler(name, gate=gate))
    server.route(lambda m, p: m == "GET" and p.endswith("/models"), openai_list)
    server.route(lambda m, p: m == "GET" and p.endswith("/v1beta/models"), gemini_list)
    return server.freeze()


def raw_request(
    url: str, target: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """Send a request line exactly as given (no client-side normalising) and read the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", "Content-Length: 0"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    with socket.create_connection((host.strip("[]"), int(port)), timeout=10) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class RawServer:
    """A TCP server on 127.0.0.1 that answers each connection with ``handler(connection)``: for
    replies no well-behaved HTTP server would send (bad headers, resets, stalls)."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.handler = handler
        self.release = threading.Event()  # handlers that stall wait on this
        self.peer_closed = threading.Event()  # set by handlers that see the client go away

    def __enter__(self) -> RawServer:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with connection:
            try:
                self.handler(connection)
            except OSError:
                self.peer_closed.set()

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()
        self.thread.join(5)


def read_request_head(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def reset(connection: socket.socket) -> None:
    """Close with a TCP reset instead of an orderly shutdown."""
    import struct

    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Polls ``check`` until it returns something truthy or ``timeout`` passes; returns the last
    result. For conditions no event announces (a file watcher's poll, a socket closing)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
