"""GzipUnwrap alone, around small ASGI apps that misbehave like the Amp upstream does."""

from __future__ import annotations

import gzip
import json

import anyio
import httpx
import pytest

from ampbridge import GzipUnwrap


def app_sending(chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None):
    async def app(scope, receive, send):
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": headers if headers is not None else [(b"content-type", b"application/json")],
            }
        )
        for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


def fetch(app) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/")

    return anyio.run(run)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


DOCUMENT = json.dumps({"ok": True, "result": ["x" * 40] * 200}).encode()


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 1 << 20])
def test_gzip_without_header_is_decoded_with_exact_length_whatever_the_chunking(size):
    response = fetch(GzipUnwrap(app_sending(pieces(gzip.compress(DOCUMENT), size))))
    assert response.content == DOCUMENT
    assert response.headers["content-length"] == str(len(DOCUMENT))


def test_large_decoded_bodies_stream_without_a_length():
    big = b"y" * (300 * 1024)
    response = fetch(GzipUnwrap(app_sending(pieces(gzip.compress(big), 4096)), buffer_size=64 * 1024))
    assert response.content == big
    assert "content-length" not in response.headers


def test_plain_bodies_pass_unchanged():
    response = fetch(
        GzipUnwrap(
            app_sending(
                [b'{"a":', b"1}"], [(b"content-type", b"application/json"), (b"content-length", b"7")]
            )
        )
    )
    assert response.content == b'{"a":1}'
    assert response.headers["content-length"] == "7"


def test_declared_gzip_is_left_to_the_client():
    body = gzip.compress(DOCUMENT)
    headers = [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")]
    response = fetch(GzipUnwrap(app_sending([body], headers)))
    assert response.content == DOCUMENT  # httpx decoded it, as any client would
    assert response.headers["content-encoding"] == "gzip"


def test_sse_is_left_alone_even_if_it_starts_like_gzip():
    events = [b"\x1f\x8b not really gzip\n\n", b"data: 2\n\n"]
    response = fetch(GzipUnwrap(app_sending(events, [(b"content-type", b"text/event-stream")])))
    assert response.content == b"".join(events)


def test_bomb_before_headers_gets_502():
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
    response = fetch(GzipUnwrap(app_sending([bomb]), max_decoded_size=1024 * 1024))
    assert response.status_code == 502
    assert response.json()["error"] == "amp_upstream_proxy_error"


def test_bomb_after_headers_is_cut_off():
    bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))
    app = GzipUnwrap(app_sending(pieces(bomb, 256)), max_decoded_size=1024 * 1024, buffer_size=16 * 1024)
    sent: list[dict] = []

    async def collect(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    anyio.run(app, {"type": "http", "method": "GET", "path": "/", "headers": []}, receive, collect)
    assert sent[0]["type"] == "http.response.start"  # headers were out before the cap was reached
    bodies = sent[1:]
    assert all(m.get("more_body") for m in bodies)  # never completed: the server cuts the connection
    assert sum(len(m["body"]) for m in bodies) <= 1024 * 1024  # the rest was never decoded


def test_corrupt_gzip_gets_502():
    response = fetch(GzipUnwrap(app_sending([b"\x1f\x8b\x08\x00garbage-not-deflate"])))
    assert response.status_code == 502
