"""Faults on either side, with real servers on 127.0.0.1: the client gets a clear error or a
cleanly ended stream, ampbridge keeps serving, nothing leaks and nothing is logged as an
unhandled exception."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
import pytest

from ampbridge.http_client import SharedClient
from ampbridge.settings import Settings

from .servers import (
    RawServer,
    ServerThread,
    eventually,
    model_backend,
    open_fds,
    read_request_head,
    reset,
    stream_until_disconnect,
)

UNREACHABLE = {"error": "amp_upstream_proxy_error", "message": "Failed to reach Amp upstream"}
SHORT_TIMEOUTS = httpx.Timeout(connect=0.5, read=0.5, write=2.0, pool=2.0)


@pytest.fixture
def watch(caplog):
    """Checks after a fault: still serving, no ASGI task or connection left, no new descriptors,
    and no traceback in the logs."""
    caplog.set_level(logging.DEBUG)

    def start(ampbridge: ServerThread):
        assert httpx.get(f"{ampbridge.url}/healthz").status_code == 200
        baseline = open_fds()

        def check() -> None:
            state = ampbridge.server.server_state
            assert httpx.get(f"{ampbridge.url}/healthz").status_code == 200
            assert eventually(lambda: not state.tasks and len(state.connections) == 0), (
                "an ASGI task is still running"
            )
            assert eventually(lambda: open_fds() <= baseline), (
                f"descriptors leaked: {open_fds()} > {baseline}"
            )
            unhandled = [
                r for r in caplog.records if r.exc_info or "Exception in ASGI application" in r.getMessage()
            ]
            assert not unhandled, [r.getMessage() for r in unhandled]

        return check

    return start


def quick_bridge(bridge, upstream_url: str, **settings) -> ServerThread:
    return bridge(
        Settings(amp_upstream_url=upstream_url, **settings), client=SharedClient(timeout=SHORT_TIMEOUTS)
    )


BACKEND_UNREACHABLE = {
    "type": "error",  # Anthropic's error shape: the route is an Anthropic one
    "error": {"type": "api_error", "message": "Local backend 'faulty' cannot be reached"},
}
MODEL_BODY = b'{"model":"m","stream":true}'


@pytest.fixture(params=["upstream", "backend"])
def faulty_side(request, bridge):
    """``connect(url) -> (ampbridge, request_path, expected_502_body)``: the misbehaving server is
    either the Amp upstream (a control-plane call) or a local backend (a model call)."""

    def connect(url: str):
        if request.param == "upstream":
            return quick_bridge(bridge, url), "/api/internal?getUserInfo", UNREACHABLE
        provider = {"name": "faulty", "type": "anthropic", "base-url": url, "models": ["m"]}
        return (
            quick_bridge(bridge, "", providers=[provider]),
            "/api/provider/anthropic/v1/messages",
            BACKEND_UNREACHABLE,
        )

    return connect


def test_upstream_refuses(bridge, watch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    ampbridge = quick_bridge(bridge, f"http://127.0.0.1:{port}")
    check = watch(ampbridge)
    response = httpx.post(f"{ampbridge.url}/api/internal?getUserInfo", content=b"{}")
    assert (response.status_code, response.json()) == (502, UNREACHABLE)
    check()


def test_upstream_times_out_on_connect(bridge, watch):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue: further handshakes get no answer
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    try:
        ampbridge = quick_bridge(bridge, f"http://127.0.0.1:{listener.getsockname()[1]}")
        check = watch(ampbridge)
        started = time.monotonic()
        response = httpx.post(f"{ampbridge.url}/api/internal?getUserInfo", content=b"{}", timeout=10)
        assert (response.status_code, response.json()) == (502, UNREACHABLE)
        assert time.monotonic() - started < 5
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    check()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nthis line is no header\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Huge: " + b"a" * 300_000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Injected: a\r\n\rb\r\nContent-Length: 0\r\n\r\n",
        b"garbage that is not HTTP at all\r\n\r\n",
    ],
    ids=["malformed", "huge", "bare-cr", "not-http"],
)
def test_a_bad_header_in_the_reply(faulty_side, watch, reply):
    def answer(connection: socket.socket) -> None:
        read_request_head(connection)
        connection.sendall(reply)

    with RawServer(answer) as raw:
        ampbridge, path, unreachable = faulty_side(raw.url)
        check = watch(ampbridge)
        response = httpx.post(f"{ampbridge.url}{path}", content=MODEL_BODY)
        assert (response.status_code, response.json()) == (502, unreachable)
    check()


def test_a_reset_mid_stream(faulty_side, watch):
    def answer(connection: socket.socket) -> None:
        read_request_head(connection)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"d\r\ndata: first\n\n\r\n"
        )
        time.sleep(0.1)
        reset(connection)

    with RawServer(answer) as raw:
        ampbridge, path, _ = faulty_side(raw.url)
        check = watch(ampbridge)
        received = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            httpx.stream("POST", f"{ampbridge.url}{path}", content=MODEL_BODY) as response,
        ):
            assert response.status_code == 200
            for line in response.iter_lines():
                received.append(line)
        assert received[0] == "data: first"  # what arrived before the reset arrived intact
    check()


def test_a_stall_mid_body(faulty_side, watch):
    def answer(connection: socket.socket) -> None:
        read_request_head(connection)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n" + b"{" * 100
        )
        raw.release.wait(10)

    with RawServer(answer) as raw:
        ampbridge, path, unreachable = faulty_side(raw.url)
        check = watch(ampbridge)
        started = time.monotonic()
        if unreachable is BACKEND_UNREACHABLE:
            # A local JSON reply is held whole to be fixed, so nothing was sent yet: a clean 504.
            response = httpx.post(f"{ampbridge.url}{path}", content=MODEL_BODY, timeout=10)
            assert response.status_code == 504
            assert response.json()["error"]["message"] == "Local backend 'faulty' timed out"
        else:  # the upstream's reply was already on its way: the client sees it cut off
            with pytest.raises(httpx.RemoteProtocolError):
                httpx.post(f"{ampbridge.url}{path}", content=MODEL_BODY, timeout=10)
        assert time.monotonic() - started < 5  # cut at the read timeout, not left hanging
        raw.release.set()
    check()


def test_an_early_close_on_a_large_upload(faulty_side, watch):
    def answer(connection: socket.socket) -> None:
        read_request_head(connection)
        connection.recv(65536)
        reset(connection)

    with RawServer(answer) as raw:
        ampbridge, path, unreachable = faulty_side(raw.url)
        check = watch(ampbridge)
        body = b'{"model":"m","pad":"' + b"x" * (20 * 1024 * 1024) + b'"}'
        response = httpx.post(f"{ampbridge.url}{path}", content=body, timeout=20)
        assert (response.status_code, response.json()) == (502, unreachable)
    check()


def test_client_disconnects_mid_upload(bridge, watch):
    def answer(connection: socket.socket) -> None:
        read_request_head(connection)
        while connection.recv(65536):
            pass
        raw.peer_closed.set()

    with RawServer(answer) as raw:
        ampbridge = quick_bridge(bridge, raw.url)
        check = watch(ampbridge)
        with socket.create_connection(("127.0.0.1", ampbridge.port)) as client:
            client.sendall(
                b"POST /api/internal?uploadThread HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n"
            )
            client.sendall(b"x" * 100_000)
            time.sleep(0.2)
        assert raw.peer_closed.wait(5), "the upstream upload was not cancelled"
    check()


def test_client_disconnects_mid_stream_from_a_local_backend(bridge, watch, upstream):
    backend_saw_disconnect = threading.Event()
    backend = model_backend("endless", ["m"])

    backend.route(
        lambda m, p: p == "/v1/messages", stream_until_disconnect(b"data: {}\n\n", backend_saw_disconnect)
    )
    with ServerThread(backend) as thread:
        ampbridge = quick_bridge(
            bridge,
            upstream.url,
            providers=[{"name": "b", "type": "anthropic", "base-url": thread.url, "models": ["m"]}],
        )
        check = watch(ampbridge)
        with httpx.stream(
            "POST", f"{ampbridge.url}/api/provider/anthropic/v1/messages", json={"model": "m", "stream": True}
        ) as response:
            assert next(response.iter_lines()) == "data: {}"
        assert backend_saw_disconnect.wait(5)
        check()


def test_client_disconnects_while_a_model_body_is_read(bridge, watch, upstream):
    ampbridge = quick_bridge(bridge, upstream.url)
    check = watch(ampbridge)
    with socket.create_connection(("127.0.0.1", ampbridge.port)) as client:
        client.sendall(
            b'POST /api/provider/openai/v1/responses HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"model":'
        )
        time.sleep(0.1)
    check()
    assert upstream.requests == []


def test_a_reply_framed_with_both_transfer_encoding_and_length_loses_the_length(faulty_side, watch):
    """RFC 9112 §6.3: Transfer-Encoding wins; a Content-Length next to it must not be relayed,
    or the client would read the chunked framing as the body's length."""

    def answer(connection: socket.socket) -> None:
        read_request_head(connection)
        connection.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 999\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )

    with RawServer(answer) as raw:
        ampbridge, path, _ = faulty_side(raw.url)
        check = watch(ampbridge)
        response = httpx.post(f"{ampbridge.url}{path}", content=MODEL_BODY)
        assert response.status_code in (200, 502)  # relayed whole, or refused as malformed: never garbled
        if response.status_code == 200:
            assert response.content == b"hello world"
            assert response.headers.get("content-length") in (None, "11")
    check()
