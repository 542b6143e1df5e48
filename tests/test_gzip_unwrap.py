"""GzipUnwrap alone, around small ASGI apps that misbehave like the Amp upstream does.

Replies are driven through ``httpx.ASGITransport`` where what a client sees is the point, and
recorded as raw ASGI messages where the exact headers or message order is. The apps send header
names in canonical case (``Content-Length``), as Go servers and nginx do.
"""

from __future__ import annotations

import gzip
import json
import logging
from typing import Any

import anyio
import httpx
import pytest

from ampbridge import GzipUnwrap

Headers = list[tuple[bytes, bytes]]
JSON_HEADERS: Headers = [(b"Content-Type", b"application/json")]


def app_sending(chunks: list[bytes], headers: Headers | None = None, *, trailers: bool = False):
    """An app that sends ``chunks`` as a streamed body (and, with ``trailers``, a trailer)."""

    async def app(scope, receive, send):
        start: dict[str, Any] = {
            "type": "http.response.start",
            "status": 200,
            "headers": list(headers if headers is not None else JSON_HEADERS),
        }
        if trailers:
            start["trailers"] = True
        await send(start)
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        if trailers:
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})

    return app


def fetch(app) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/")

    return anyio.run(run)


def record(app, extensions: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The raw ASGI messages ``app`` sends for one GET."""
    sent: list[dict[str, Any]] = []

    async def collect(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "extensions": extensions or {}}
    anyio.run(app, scope, receive, collect)
    return sent


def lengths(message: dict[str, Any]) -> list[bytes]:
    return [value for name, value in message["headers"] if name.lower() == b"content-length"]


def body_of(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


DOCUMENT = json.dumps({"ok": True, "result": ["x" * 40] * 200}).encode()
COMPRESSED = gzip.compress(DOCUMENT)


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 1 << 20])
def test_gzip_without_header_is_decoded_with_exact_length_whatever_the_chunking(size):
    response = fetch(GzipUnwrap(app_sending(pieces(COMPRESSED, size))))
    assert response.content == DOCUMENT
    assert response.headers["content-length"] == str(len(DOCUMENT))


def test_canonical_case_content_length_is_replaced_not_doubled():
    headers = [*JSON_HEADERS, (b"Content-Length", str(len(COMPRESSED)).encode())]
    sent = record(GzipUnwrap(app_sending(pieces(COMPRESSED, 100), headers)))
    assert lengths(sent[0]) == [str(len(DOCUMENT)).encode()]
    assert body_of(sent) == DOCUMENT


def test_canonical_case_content_length_reaches_a_client_once():
    headers = [*JSON_HEADERS, (b"Content-Length", str(len(COMPRESSED)).encode())]
    response = fetch(GzipUnwrap(app_sending([COMPRESSED], headers)))
    assert response.headers.get_list("content-length") == [str(len(DOCUMENT))]
    assert response.json() == json.loads(DOCUMENT)


def test_large_decoded_bodies_stream_without_a_length():
    big = b"y" * (300 * 1024)
    headers = [*JSON_HEADERS, (b"Content-Length", b"999")]
    sent = record(GzipUnwrap(app_sending(pieces(gzip.compress(big), 4096), headers), buffer_size=64 * 1024))
    assert lengths(sent[0]) == []
    assert body_of(sent) == big


def test_concatenated_gzip_members_are_decoded_whole():
    response = fetch(GzipUnwrap(app_sending([gzip.compress(b"first,") + gzip.compress(b"second")])))
    assert response.content == b"first,second"


def test_plain_bodies_pass_unchanged():
    headers = [*JSON_HEADERS, (b"Content-Length", b"7")]
    sent = record(GzipUnwrap(app_sending([b'{"a":', b"1}"], headers)))
    assert sent[0]["headers"] == headers
    assert body_of(sent) == b'{"a":1}'


@pytest.mark.parametrize("name", [b"content-encoding", b"Content-Encoding", b"CONTENT-ENCODING"])
def test_declared_encoding_is_never_touched_whatever_its_case(name):
    headers = [*JSON_HEADERS, (name, b"gzip"), (b"Content-Length", str(len(COMPRESSED)).encode())]
    app = app_sending([COMPRESSED], headers)
    assert record(GzipUnwrap(app)) == record(app)


def test_declared_gzip_reaches_a_gzip_client_decodable():
    headers = [
        *JSON_HEADERS,
        (b"Content-Encoding", b"gzip"),
        (b"Content-Length", str(len(COMPRESSED)).encode()),
    ]
    response = fetch(GzipUnwrap(app_sending([COMPRESSED], headers)))
    assert response.content == DOCUMENT  # httpx decoded it, as any client would
    assert response.headers.get_list("content-length") == [str(len(COMPRESSED))]


def test_event_stream_is_never_gunzipped_even_when_it_is_gzip():
    app = app_sending(pieces(COMPRESSED, 50), [(b"Content-Type", b"text/event-stream; charset=utf-8")])
    assert record(GzipUnwrap(app)) == record(app)


def test_event_stream_starting_like_gzip_passes_as_it_comes():
    events = [b"\x1f\x8b not really gzip\n\n", b"data: 2\n\n"]
    response = fetch(GzipUnwrap(app_sending(events, [(b"Content-Type", b"text/event-stream")])))
    assert response.content == b"".join(events)


def test_undecodable_gzip_is_passed_on_unchanged_with_its_headers(caplog):
    garbage = b"\x1f\x8b\x08\x00garbage-not-deflate"
    headers = [*JSON_HEADERS, (b"Content-Length", str(len(garbage)).encode())]
    with caplog.at_level(logging.WARNING, logger="ampbridge.gzip"):
        sent = record(GzipUnwrap(app_sending(pieces(garbage, 3), headers)))
    assert sent[0] == {"type": "http.response.start", "status": 200, "headers": headers}
    assert body_of(sent) == garbage
    assert sent[-1].get("more_body", False) is False
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_undecodable_gzip_reaches_the_client_as_sent():
    garbage = b"\x1f\x8b\x08\x00garbage-not-deflate"
    response = fetch(GzipUnwrap(app_sending([garbage])))
    assert response.status_code == 200
    assert response.content == garbage


def test_truncated_gzip_is_passed_on_unchanged_with_one_warning_and_no_traceback(caplog):
    truncated = COMPRESSED[:-6]  # the trailer (CRC and size) is missing
    with caplog.at_level(logging.WARNING):
        response = fetch(GzipUnwrap(app_sending([truncated])))
    assert response.status_code == 200
    assert response.content == truncated
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].exc_info is None
    assert "trailer" in warnings[0].getMessage()


def test_truncated_gzip_after_headers_are_out_is_cut_with_one_warning(caplog):
    big = bytes(range(256)) * 2048  # 512 KiB: more than the buffer, so headers go out early
    truncated = gzip.compress(big)[:-6]
    with caplog.at_level(logging.WARNING):
        sent = record(GzipUnwrap(app_sending(pieces(truncated, 4096)), buffer_size=16 * 1024))
    assert sent[0]["type"] == "http.response.start"
    assert all(m["more_body"] for m in sent[1:])  # never completed: the server cuts the connection
    assert big.startswith(body_of(sent))
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None


def test_bomb_before_headers_gets_502():
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
    response = fetch(GzipUnwrap(app_sending([bomb]), max_decoded_size=1024 * 1024))
    assert response.status_code == 502
    assert response.json()["error"] == "amp_upstream_proxy_error"


def test_bomb_after_headers_is_cut_off():
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
    app = GzipUnwrap(app_sending(pieces(bomb, 256)), max_decoded_size=1024 * 1024, buffer_size=16 * 1024)
    sent = record(app)
    assert sent[0]["type"] == "http.response.start"  # headers were out before the cap was reached
    bodies = sent[1:]
    assert all(m.get("more_body") for m in bodies)  # never completed: the server cuts the connection
    assert sum(len(m["body"]) for m in bodies) <= 1024 * 1024  # the rest was never decoded


def test_file_reply_sent_by_pathsend_passes_untouched():
    start = {"type": "http.response.start", "status": 200, "headers": [(b"Content-Length", b"10")]}
    pathsend = {"type": "http.response.pathsend", "path": "/tmp/some-file.gz"}

    async def app(scope, receive, send):
        await send(dict(start))
        await send(dict(pathsend))

    sent = record(GzipUnwrap(app), extensions={"http.response.pathsend": {}})
    assert sent == [start, pathsend]


def test_gzip_reply_with_trailers_is_decoded_chunked_and_keeps_its_trailers():
    headers = [*JSON_HEADERS, (b"Content-Length", str(len(COMPRESSED)).encode())]
    sent = record(GzipUnwrap(app_sending([COMPRESSED], headers, trailers=True)))
    assert sent[0]["trailers"] is True
    assert lengths(sent[0]) == []
    assert body_of(sent) == DOCUMENT
    assert sent[-1] == {"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]}
    assert [m["type"] for m in sent].count("http.response.trailers") == 1


def test_plain_reply_with_trailers_passes_in_order():
    app = app_sending([b"plain"], JSON_HEADERS, trailers=True)
    assert record(GzipUnwrap(app)) == record(app)


def test_early_hints_pass_before_the_held_start():
    hint = {"type": "http.response.early_hint", "links": ["</style.css>; rel=preload"]}

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": list(JSON_HEADERS)})
        await send(dict(hint))
        await send({"type": "http.response.body", "body": COMPRESSED})

    sent = record(GzipUnwrap(app))
    assert [m["type"] for m in sent] == [
        "http.response.early_hint",
        "http.response.start",
        "http.response.body",
    ]
    assert body_of(sent) == DOCUMENT


def test_other_scopes_pass_straight_through():
    seen: list[str] = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    async def nothing():
        return {}

    async def ignore(message):
        pass

    anyio.run(GzipUnwrap(app), {"type": "lifespan"}, nothing, ignore)
    assert seen == ["lifespan"]


@pytest.mark.parametrize("arguments", [{"max_decoded_size": 0}, {"buffer_size": -1}])
def test_bad_sizes_fail_at_construction(arguments):
    with pytest.raises(ValueError, match="GzipUnwrap"):
        GzipUnwrap(app_sending([]), **arguments)


def app_breaking_off(body: bytes, headers: Headers):
    """An app whose source broke off: it sent a start and part of a body, then returned."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body, "more_body": True})

    return app


@pytest.mark.parametrize("partial", [b"\x1f", COMPRESSED[:40]], ids=["before-the-magic", "mid-gzip"])
def test_a_body_that_breaks_off_while_held_is_passed_as_far_as_it_came_and_left_open(partial):
    headers = [*JSON_HEADERS, (b"Content-Length", str(len(COMPRESSED)).encode())]
    sent = record(GzipUnwrap(app_breaking_off(partial, headers)))
    assert sent == [
        {"type": "http.response.start", "status": 200, "headers": headers},
        {"type": "http.response.body", "body": partial, "more_body": True},
    ]
