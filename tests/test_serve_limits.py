"""The serve limits with a real uvicorn: a request head must arrive in time, and stalled
connections cannot lock real clients out."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from ampbridge.serve_limits import limited_protocol, uvicorn_options

from .servers import ServerThread, eventually

HALF_HEAD = b"GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Never: "


def make_app(release: threading.Event):
    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        headers = [(b"content-type", b"text/plain")]
        message = await receive()
        while message.get("more_body"):  # answer only after the whole body arrived
            message = await receive()
        if scope["path"] == "/stream":  # a long response: the first part, then the rest when released
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"first,", "more_body": True})
            import anyio

            await anyio.to_thread.run_sync(release.wait, 30)
            await send({"type": "http.response.body", "body": b"rest"})
            return
        await send(
            {"type": "http.response.start", "status": 200, "headers": [*headers, (b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.fixture(params=["httptools", "h11"])
def implementation(request):
    return request.param


def serve(implementation: str, header_timeout: float, max_connections: int, **config) -> ServerThread:
    release = threading.Event()
    protocol = limited_protocol(header_timeout, max_connections, implementation=implementation)
    thread = ServerThread(make_app(release), http=protocol, timeout_keep_alive=75, **config)
    thread.release = release  # type: ignore[attr-defined]
    return thread


def closed_by_server(connection: socket.socket, within: float) -> float | None:
    """Seconds until the server closed ``connection`` (EOF or reset), or None if it stayed open."""
    start = time.monotonic()
    connection.settimeout(within)
    try:
        data = connection.recv(65536)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return time.monotonic() - start
    assert data == b"", data
    return time.monotonic() - start


def test_uvicorn_options_select_the_limited_protocol():
    options = uvicorn_options(header_timeout=45, max_connections=500)
    assert set(options) == {"http"}
    assert options["http"].limits.header_timeout == 45
    assert options["http"].limits.max_connections == 500


def test_a_half_sent_request_head_is_closed_after_the_timeout(implementation):
    with (
        serve(implementation, 0.5, 100) as server,
        socket.create_connection(("127.0.0.1", server.port)) as slow,
    ):
        slow.sendall(HALF_HEAD)
        started = time.monotonic()
        waited = closed_by_server(slow, within=10)
        assert waited is not None, "the stalled connection was never closed"
        assert 0.4 < time.monotonic() - started < 5


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(implementation):
    with (
        serve(implementation, 0.5, 100) as server,
        socket.create_connection(("127.0.0.1", server.port)) as idle,
    ):
        assert closed_by_server(idle, within=10) is not None


def test_a_slow_head_on_a_kept_alive_connection_is_closed_too(implementation):
    with (
        serve(implementation, 0.5, 100) as server,
        socket.create_connection(("127.0.0.1", server.port)) as conn,
    ):
        conn.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        conn.settimeout(5)
        assert conn.recv(65536).endswith(b"\r\n\r\nok")
        # idle past the head timeout: keep-alive (75 s here) decides, the connection stays
        assert closed_by_server(conn, within=1.0) is None
        conn.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        conn.settimeout(5)
        assert conn.recv(65536).endswith(b"\r\n\r\nok")
        conn.sendall(HALF_HEAD)
        assert closed_by_server(conn, within=10) is not None


def test_a_slow_body_is_not_cut_by_the_head_timeout(implementation):
    with (
        serve(implementation, 0.5, 100) as server,
        socket.create_connection(("127.0.0.1", server.port)) as conn,
    ):
        conn.sendall(b"POST /ok HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\n\r\nab")
        assert closed_by_server(conn, within=1.0) is None  # waiting for the body's last bytes
        conn.sendall(b"cd")
        conn.settimeout(5)
        assert conn.recv(65536).endswith(b"\r\n\r\nok")


def test_stalled_connections_cannot_lock_out_real_clients(implementation):
    """1,100 half-sent heads against a cap of 50 and a 30 s head timeout: each new connection
    evicts the oldest one still waiting for its head, so the server never holds more than the
    cap, a real client is served at once, and a response in progress is not cut."""
    with serve(implementation, 30, 50) as server:
        in_progress = socket.create_connection(("127.0.0.1", server.port))
        in_progress.sendall(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        in_progress.settimeout(5)
        assert b"first," in in_progress.recv(65536)

        stalled = []
        try:
            for _ in range(1100):
                connection = socket.create_connection(("127.0.0.1", server.port))
                connection.sendall(HALF_HEAD)
                stalled.append(connection)
            assert eventually(lambda: len(server.server.server_state.connections) <= 51)
            response = httpx.get(f"{server.url}/ok", timeout=5)
            assert (response.status_code, response.text) == (200, "ok")
            assert closed_by_server(stalled[0], within=5) is not None  # the oldest were evicted
        finally:
            for connection in stalled:
                connection.close()

        server.release.set()
        in_progress.settimeout(5)
        rest = b""
        while not rest.endswith(b"rest\r\n0\r\n\r\n"):
            chunk = in_progress.recv(65536)
            assert chunk, "the response in progress was cut"
            rest += chunk
        in_progress.close()


def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused(implementation):
    with serve(implementation, 30, 3) as server:
        busy = []
        for _ in range(3):
            connection = socket.create_connection(("127.0.0.1", server.port))
            connection.sendall(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            connection.settimeout(5)
            assert b"first," in connection.recv(65536)
            busy.append(connection)
        extra = socket.create_connection(("127.0.0.1", server.port))
        extra.sendall(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert closed_by_server(extra, within=5) is not None
        extra.close()
        server.release.set()
        for connection in busy:
            data = b""
            while not data.endswith(b"0\r\n\r\n"):
                chunk = connection.recv(65536)
                assert chunk
                data += chunk
            connection.close()


def test_bad_limits_fail_at_construction():
    with pytest.raises(ValueError):
        limited_protocol(0, 10)
    with pytest.raises(ValueError):
        limited_protocol(30, 0)


def test_one_protocol_class_keeps_its_deadlines_when_its_server_starts_again():
    """A server stopped while a sweep was pending, then started again on a new event loop with
    the same protocol class, still closes a stalled request head."""
    protocol = limited_protocol(0.5, 100, implementation="httptools")
    for _ in range(2):
        with (
            ServerThread(make_app(threading.Event()), http=protocol, timeout_keep_alive=75) as server,
            socket.create_connection(("127.0.0.1", server.port)) as slow,
        ):
            slow.sendall(HALF_HEAD)
            assert closed_by_server(slow, within=5) is not None
            with socket.create_connection(("127.0.0.1", server.port)) as pending:
                pending.sendall(HALF_HEAD)  # its deadline is still ahead when the server stops
