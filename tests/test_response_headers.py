"""``response_headers``: what of a backend's reply headers reaches the client, in one pass for the
common reply (names as Go and nginx spell them, order and repeats kept)."""

from __future__ import annotations

from ampbridge.headers import response_headers


def test_names_are_lowercased_in_order_with_repeats_kept_and_hop_headers_date_and_cors_gone() -> None:
    raw = [
        (b"Content-Type", b"application/json"),
        (b"Date", b"Wed, 25 Nov 2026 18:00:00 GMT"),
        (b"Set-Cookie", b"a=1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Access-Control-Allow-Origin", b"*"),
        (b"Set-Cookie", b"b=2"),
        (b"Content-Length", b"12"),
        (b"Connection", b"keep-alive"),
        (b"Request-Id", b"req_1"),
        (b"Proxy-Authenticate", b"Basic"),
    ]
    assert response_headers(raw) == [
        (b"content-type", b"application/json"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-length", b"12"),
        (b"request-id", b"req_1"),
    ]


def test_headers_named_by_connection_are_dropped_wherever_they_stand() -> None:
    raw = [
        (b"X-Before", b"1"),
        (b"Connection", b"X-Before, close ,, X-After"),
        (b"X-After", b"2"),
        (b"X-Other", b"3"),
    ]
    assert response_headers(raw) == [(b"x-other", b"3")]


def test_a_length_next_to_transfer_encoding_is_dropped_in_either_order() -> None:
    for raw in (
        [(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"text/plain")],
        [(b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"text/plain"), (b"Content-Length", b"5")],
    ):
        assert response_headers(raw) == [(b"content-type", b"text/plain")]


def test_a_common_reply_keeps_every_end_to_end_header() -> None:
    raw = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-request-id", b"r")]
    assert response_headers(raw) == raw
    assert response_headers(iter(raw)) == raw  # any iterable, read once
