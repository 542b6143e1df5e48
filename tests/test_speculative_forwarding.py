"""Speculative forwarding of large model calls (issue 17): a body whose first member is its model
goes to that model's next hop as it arrives from the client, and the body's end confirms the
route; when the end refutes it, the speculated connection is cut short (the next hop never gets a
whole request) and the call is routed as before. Never two complete calls.

The next hops are raw socket servers answering like a Go server, so each test sees exactly what
bytes every connection received, and whether its request was complete when it closed. A client
that holds back the end of its body until a next hop has received part of it shows the overlap;
it gives up waiting after ``WAIT`` seconds and sends the rest anyway, so code without the
feature fails the test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httpx
import pytest

from ampbridge.rewrite import sanitize_anthropic_request
from ampbridge.settings import Settings

from .servers import RawServer, ServerThread, eventually

MIB = 1 << 20
WAIT = 10.0  # seconds to wait for what the feature makes happen at once
HELD_FROM = 3 * MIB // 2  # the client sends this much, then holds back the rest
REACHED = MIB  # a next hop that received this much of a body was sent it before its end
EARLY_AT = 64 * 1024  # an early-answering next hop answers after this much of the body

MESSAGES = "/api/provider/anthropic/v1/messages"
CHAT = "/api/provider/openai/v1/chat/completions"
RESPONSES = "/api/provider/openai/v1/responses"
LOCAL = "claude-opus-4-7"  # served by the Anthropic backend, not renamed
LOCAL_OPENAI = "gpt-5.4"
REMOTE = "claude-remote-only"  # served by no backend: the Amp upstream
REFUSAL: dict[str, object] = {
    "type": "error",
    "error": {"type": "authentication_error", "message": "invalid x-api-key"},
}


def model_body(
    opening: bytes, *, messages: list[dict[str, object]] | None = None, tail: bytes = b"", size: int = 3 * MIB
) -> bytes:
    """A model call of about ``size`` bytes opening with the members ``opening`` as written, then
    padding (non-ASCII, escapes), then ``messages`` and the members ``tail``: odd but valid JSON
    whose end is only known once all of it has arrived."""
    conversation = messages or [{"role": "user", "content": 'héllo "quoted" \\ back\\slash'}]
    padding = ('pad é \\" ' * (size // 11)).encode()
    return (
        b"{"
        + opening
        + b', "metadata": {"note": "'
        + padding
        + b'"},\n "messages" : '
        + json.dumps(conversation, ensure_ascii=False).encode()
        + tail
        + b"}"
    )


# --- next hops on the wire ------------------------------------------------------------------


@dataclass
class Exchange:
    """One request a next hop's connection began to receive: its head and the body bytes that
    arrived, and whether the peer closed the connection (``closed``)."""

    head: bytes
    declared: int | None  # its Content-Length
    body: bytearray = field(default_factory=bytearray)
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def path(self) -> str:
        return self.head.split(b" ", 2)[1].decode()

    @property
    def complete(self) -> bool:
        return self.declared is not None and len(self.body) >= self.declared

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode()
        return None

    def json(self) -> object:
        return json.loads(bytes(self.body))


Answer = Callable[[Exchange], tuple[int, dict[str, object]]]


def model_answer(exchange: Exchange) -> tuple[int, dict[str, object]]:
    """A plain reply in the wire format of the exchange's path."""
    if exchange.path.endswith("/messages"):
        return 200, anthropic_message([{"type": "text", "text": "OK"}])
    return 200, {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def anthropic_message(content: list[dict[str, object]]) -> dict[str, object]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": LOCAL,
        "content": content,
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def refusal(exchange: Exchange) -> tuple[int, dict[str, object]]:
    return 401, REFUSAL


class Hop:
    """A next hop (a backend or the Amp upstream) on a raw socket that answers like a Go server
    (canonical header names, a ``Date``, kept-alive connections) and records every request each
    connection began to receive, byte for byte.

    ``early``: it answers a body longer than ``EARLY_AT`` after reading that much, with
    ``Connection: close``, then closes its side and reads what still comes until the peer closes,
    as nginx does before closing a connection it refused.
    """

    def __init__(self, name: str, answer: Answer = model_answer, *, early: bool = False) -> None:
        self.name = name
        self.answer = answer
        self.early = early
        self.exchanges: list[Exchange] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.reached = threading.Event()  # a body reached REACHED bytes
        self.answered_early = threading.Event()
        self.cut_short = threading.Event()  # a connection closed with its request incomplete

    def __enter__(self) -> Hop:
        self.server = RawServer(self.serve).__enter__()
        self.url = self.server.url
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    def complete(self) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.complete]

    def serve(self, connection: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        begun: list[Exchange] = []
        try:
            self.converse(connection, begun)
        except TimeoutError:
            return  # the peer kept the connection open: it did not close it
        except OSError:
            pass  # reset by the peer
        for exchange in begun:
            if not exchange.complete:
                self.cut_short.set()
            exchange.closed.set()

    def converse(self, connection: socket.socket, begun: list[Exchange]) -> None:
        """Reads requests and answers them until the peer closes the connection."""
        pending = b""
        while True:
            while b"\r\n\r\n" not in pending:
                chunk = connection.recv(1 << 16)
                if not chunk:
                    return
                pending += chunk
            head, _, pending = pending.partition(b"\r\n\r\n")
            exchange = Exchange(head, declared_length(head))
            with self.lock:
                self.exchanges.append(exchange)
            begun.append(exchange)
            if exchange.declared is None:  # chunked or no length: not what these tests expect
                connection.sendall(self.reply(411, {"error": "length required"}, close=True))
                return
            exchange.body += pending[: exchange.declared]
            pending = pending[exchange.declared :]
            answer_at = EARLY_AT if self.early else exchange.declared
            while len(exchange.body) < min(answer_at, exchange.declared):
                chunk = connection.recv(1 << 16)
                if not chunk:
                    return
                missing = exchange.declared - len(exchange.body)
                exchange.body += chunk[:missing]
                pending += chunk[missing:]
                if len(exchange.body) >= REACHED:
                    self.reached.set()
            if not exchange.complete:  # early: answer now, close, read what still comes
                connection.sendall(self.reply(*self.answer(exchange), close=True))
                self.answered_early.set()
                connection.shutdown(socket.SHUT_WR)
                connection.settimeout(WAIT)
                while chunk := connection.recv(1 << 16):
                    exchange.body += chunk
                return
            connection.sendall(self.reply(*self.answer(exchange)))

    def reply(self, status: int, payload: dict[str, object], *, close: bool = False) -> bytes:
        """An answer as a Go server writes it."""
        body = json.dumps(payload).encode()
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            f"X-Served-By: {self.name}",
            f"Date: {formatdate(usegmt=True)}",
            *(["Connection: close"] if close else []),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def declared_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


def assert_cut_short(hop: Hop) -> None:
    """Every request ``hop`` began to receive ended incomplete, its connection closed by ampbridge."""
    for exchange in hop.exchanges:
        assert exchange.declared is not None and len(exchange.body) < exchange.declared, (
            f"{hop.name} received a complete request ({len(exchange.body)} bytes)"
        )
        assert exchange.closed.wait(WAIT), f"{hop.name}'s connection was left open"


def assert_received_once(hop: Hop, body: bytes) -> None:
    """``hop`` received ``body`` once, whole, byte for byte, with its length."""
    (exchange,) = hop.complete()
    assert bytes(exchange.body) == body
    assert exchange.header("content-length") == str(len(body))


# --- the client -----------------------------------------------------------------------------


class HeldBody:
    """A request body sent in two parts, the second once ``until`` is set. After ``WAIT``
    seconds it sends the second part anyway and notes that it waited in vain (``in_time``)."""

    def __init__(self, body: bytes, until: threading.Event) -> None:
        self.body = body
        self.until = until
        self.in_time: bool | None = None

    def __iter__(self) -> Iterator[bytes]:
        yield self.body[:HELD_FROM]
        self.in_time = self.until.wait(WAIT)
        yield self.body[HELD_FROM:]


def post_held(url: str, body: bytes, until: threading.Event) -> tuple[httpx.Response, bool]:
    """POSTs ``body`` (with its Content-Length) holding back its end until ``until`` is set;
    the reply, and whether ``until`` was set in time."""
    held = HeldBody(body, until)
    response = httpx.post(
        url,
        content=held,
        headers={"Content-Type": "application/json", "Content-Length": str(len(body))},
        timeout=3 * WAIT,
    )
    assert held.in_time is not None
    return response, held.in_time


NOT_STREAMED = "the next hop got nothing while the client held back the body's end: it was not streamed"


# --- ampbridge between them -----------------------------------------------------------------


@pytest.fixture
def hop() -> Iterator[Callable[..., Hop]]:
    """``hop(name, answer=..., early=...)`` starts a next hop for the test."""
    with contextlib.ExitStack() as stack:
        yield lambda name, **options: stack.enter_context(Hop(name, **options))


def routing(anthropic: Hop, upstream: Hop, openai: Hop | None = None) -> Settings:
    """Settings serving ``LOCAL`` from ``anthropic`` (and ``LOCAL_OPENAI`` from ``openai``),
    everything else from the Amp upstream ``upstream``."""
    providers: list[Any] = [
        {"name": "claude", "type": "anthropic", "base-url": anthropic.url, "api-key": "k", "models": [LOCAL]}
    ]
    if openai is not None:
        providers.append(
            {
                "name": "gpt",
                "type": "openai",
                "base-url": openai.url + "/v1",
                "api-key": "k",
                "models": [LOCAL_OPENAI],
            }
        )
    return Settings(providers=providers, amp_upstream_url=upstream.url)


@pytest.fixture
def local(hop: Callable[..., Hop]) -> Hop:
    return hop("anthropic-backend")


@pytest.fixture
def upstream(hop: Callable[..., Hop]) -> Hop:
    return hop("amp-upstream")


@pytest.fixture
def ampbridge(bridge: Callable[..., ServerThread], local: Hop, upstream: Hop) -> ServerThread:
    return bridge(routing(local, upstream))


# --- confirmed: the body goes as it arrives -------------------------------------------------


@pytest.mark.parametrize(("path", "model"), [(MESSAGES, LOCAL), (CHAT, LOCAL_OPENAI)])
def test_a_local_call_is_streamed_to_its_backend_as_the_body_arrives(
    bridge, hop, upstream, caplog, path, model
):
    caplog.set_level(logging.INFO, logger="ampbridge.routing")
    anthropic, openai = hop("anthropic-backend"), hop("openai-backend")
    ampbridge = bridge(routing(anthropic, upstream, openai))
    backend = anthropic if path == MESSAGES else openai
    body = model_body(f'"model": "{model}"'.encode())
    response, in_time = post_held(ampbridge.url + path, body, backend.reached)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == backend.name
    (exchange,) = backend.exchanges
    assert response.json() == model_answer(exchange)[1]
    assert_received_once(backend, body)
    assert upstream.exchanges == []
    routed = eventually(lambda: [r.getMessage() for r in caplog.records if r.name == "ampbridge.routing"])
    assert len(routed) == 1 and routed[0].startswith(f"LOCAL model={model} "), routed
    assert in_time, NOT_STREAMED


@pytest.mark.parametrize(("path", "model"), [(MESSAGES, REMOTE), (RESPONSES, "gpt-remote-only")])
def test_a_call_for_amp_is_streamed_to_the_upstream_as_the_body_arrives(
    ampbridge, local, upstream, path, model
):
    body = model_body(f'"model":"{model}"'.encode())
    response, in_time = post_held(ampbridge.url + path, body, upstream.reached)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "amp-upstream"
    (exchange,) = upstream.exchanges
    assert exchange.path == path
    assert response.json() == model_answer(exchange)[1]
    assert_received_once(upstream, body)
    assert local.exchanges == []
    assert in_time, NOT_STREAMED


def test_a_speculated_local_call_still_gets_its_tool_names_fixed(bridge, hop, upstream):
    def lower_case_tool(exchange: Exchange) -> tuple[int, dict[str, object]]:
        return 200, anthropic_message([{"type": "tool_use", "id": "t1", "name": "read", "input": {}}])

    backend = hop("anthropic-backend", answer=lower_case_tool)
    ampbridge = bridge(routing(backend, upstream))
    # The tools come last: the names are known only once the whole body has arrived.
    body = model_body(b'"model":"claude-opus-4-7"', tail=b', "tools": [{"name": "Read", "input_schema": {}}]')
    response, in_time = post_held(ampbridge.url + MESSAGES, body, backend.reached)
    assert response.status_code == 200
    assert response.json()["content"][0]["name"] == "Read"
    assert_received_once(backend, body)
    assert in_time, NOT_STREAMED


# --- refuted at the end: the speculated hop never gets a whole request ----------------------


def test_a_later_model_for_amp_cuts_the_local_backend_short(ampbridge, local, upstream, caplog):
    caplog.set_level(logging.INFO, logger="ampbridge.routing")
    body = model_body(b'"model": "claude-opus-4-7"', tail=b', "model": "claude-remote-only"')
    response, in_time = post_held(ampbridge.url + MESSAGES, body, local.reached)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "amp-upstream"
    assert_received_once(upstream, body)
    assert local.complete() == []
    assert_cut_short(local)
    routed = eventually(lambda: [r.getMessage() for r in caplog.records if r.name == "ampbridge.routing"])
    assert len(routed) == 1 and routed[0].startswith("AMP_CREDITS model=claude-remote-only "), routed
    assert in_time and local.exchanges, NOT_STREAMED


def test_a_later_local_model_cuts_the_upstream_short(ampbridge, local, upstream):
    body = model_body(b'"model": "claude-remote-only"', tail=b', "model": "claude-opus-4-7"')
    response, in_time = post_held(ampbridge.url + MESSAGES, body, upstream.reached)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "anthropic-backend"
    assert_received_once(local, body)
    assert upstream.complete() == []
    assert_cut_short(upstream)
    assert in_time and upstream.exchanges, NOT_STREAMED


def test_messages_that_need_sanitizing_are_sent_again_sanitized(ampbridge, local, upstream):
    conversation: list[dict[str, object]] = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "unsigned"}, {"type": "text", "text": "ok"}],
        },
        {"role": "user", "content": "go on"},
    ]
    body = model_body(b'"model":"claude-opus-4-7"', messages=conversation)
    expected = json.loads(body)
    assert sanitize_anthropic_request(expected)
    response, in_time = post_held(ampbridge.url + MESSAGES, body, local.reached)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "anthropic-backend"
    (sanitized,) = local.complete()
    assert sanitized.json() == expected
    assert sanitized.header("content-length") == str(len(sanitized.body))
    speculated = [exchange for exchange in local.exchanges if exchange is not sanitized]
    assert speculated, NOT_STREAMED
    for exchange in speculated:
        assert exchange.declared == len(body) and len(exchange.body) < len(body)
        assert exchange.closed.wait(WAIT)
    assert upstream.exchanges == []
    assert in_time, NOT_STREAMED


# --- a next hop that answers before the body is complete ------------------------------------


def test_an_early_answer_is_passed_on_once_the_body_confirms_the_route(bridge, hop, upstream):
    backend = hop("anthropic-backend", answer=refusal, early=True)
    ampbridge = bridge(routing(backend, upstream))
    body = model_body(b'"model":"claude-opus-4-7"')
    response, in_time = post_held(ampbridge.url + MESSAGES, body, backend.answered_early)
    assert response.status_code == 401
    assert response.json() == REFUSAL
    assert backend.connections == 1  # not sent again
    assert upstream.exchanges == []
    assert in_time, "the backend was not sent the body before its end: it could not answer early"


def test_an_early_answer_is_dropped_when_the_body_refutes_the_route(bridge, hop, upstream):
    backend = hop("anthropic-backend", answer=refusal, early=True)
    ampbridge = bridge(routing(backend, upstream))
    body = model_body(b'"model":"claude-opus-4-7"', tail=b', "model": "claude-remote-only"')
    response, in_time = post_held(ampbridge.url + MESSAGES, body, backend.answered_early)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "amp-upstream"
    assert_received_once(upstream, body)
    assert in_time, "the backend was not sent the body before its end: it could not answer early"
    assert backend.connections == 1
    assert_cut_short(backend)


# --- a client that goes away ----------------------------------------------------------------


def test_a_client_leaving_mid_body_cuts_the_speculated_backend_short(ampbridge, local, upstream):
    body = model_body(b'"model":"claude-opus-4-7"')
    head = (
        f"POST {MESSAGES} HTTP/1.1\r\nHost: {ampbridge.host}:{ampbridge.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection((ampbridge.host, ampbridge.port), timeout=WAIT) as client:
        client.sendall(head + body[:HELD_FROM])
        in_time = local.reached.wait(WAIT)
    assert in_time, NOT_STREAMED
    assert local.cut_short.wait(5), "the speculated backend's connection was left open"
    assert_cut_short(local)
    assert upstream.exchanges == []
    small = {"model": LOCAL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    after = httpx.post(ampbridge.url + MESSAGES, json=small, timeout=WAIT)
    assert after.status_code == 200
    assert after.headers["x-served-by"] == "anthropic-backend"
    (served,) = local.complete()
    assert served.json() == small


# --- not speculated, or odd JSON: the outcome is today's ------------------------------------


@pytest.mark.parametrize(
    ("opening", "served_by"),
    [
        (b'"max_tokens": 16, "model": "claude-opus-4-7"', "anthropic-backend"),  # first member not the model
        (b'"stream": false, "model": "claude-remote-only"', "amp-upstream"),
        (b'"model": null, "model": "claude-opus-4-7"', "anthropic-backend"),  # first model not a string
    ],
)
def test_a_body_not_opening_with_its_model_is_routed_whole(ampbridge, local, upstream, opening, served_by):
    body = model_body(opening)
    response = httpx.post(ampbridge.url + MESSAGES, content=body, timeout=WAIT)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == served_by
    served, other = (local, upstream) if served_by == local.name else (upstream, local)
    assert_received_once(served, body)
    assert len(served.exchanges) == 1
    assert other.exchanges == []


@pytest.mark.parametrize(
    ("opening", "served_by", "cut_short"),
    [
        (b'\n\t"model" :\t"claude-opus-4-7"  ', "anthropic-backend", 0),
        (b'"model":"claude\\u002dopus-4-7"', "anthropic-backend", 0),  # the same model, escaped
        (b'"model" : "claude-remote-\\u006fnly"', "amp-upstream", 0),
        (b'"model":"claude-opus-4-7","model" : "claude-remote-only"', "amp-upstream", 1),  # refuted
    ],
)
def test_odd_but_valid_json_arrives_byte_for_byte(ampbridge, local, upstream, opening, served_by, cut_short):
    body = model_body(opening, tail=', "note": "naïve \\u00e9 \\n \\"end\\""  '.encode())
    response = httpx.post(ampbridge.url + MESSAGES, content=body, timeout=WAIT)
    assert response.status_code == 200
    assert response.headers["x-served-by"] == served_by
    served, other = (local, upstream) if served_by == local.name else (upstream, local)
    assert_received_once(served, body)
    assert len(served.exchanges) == 1
    assert len(other.exchanges) == cut_short and other.complete() == []
    assert_cut_short(other)


def test_a_local_model_with_an_empty_thinking_suffix_is_still_renamed(ampbridge, local, upstream):
    body = model_body(b'"model": "claude-opus-4-7()"')
    response = httpx.post(ampbridge.url + MESSAGES, content=body, timeout=WAIT)
    assert response.status_code == 200
    (renamed,) = local.complete()
    assert bytes(renamed.body) == body.replace(b'"claude-opus-4-7()"', b'"claude-opus-4-7"', 1)
    assert renamed.header("content-length") == str(len(renamed.body))
    assert upstream.exchanges == []
