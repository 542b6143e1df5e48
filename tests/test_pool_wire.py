"""The transport's HTTP/1.1 on the wire, against raw servers that answer exactly as given: interim
replies, HEAD, bodies framed by the close, chunked uploads, refused header injection, replies
that say too much, and TLS."""

from __future__ import annotations

import socket
import ssl
import threading

import anyio
import httpx
import pytest
import trustme

from ampbridge.pool import StackPoolTransport

from .servers import RawServer, read_request_head


def new_transport(ssl_context: ssl.SSLContext | None = None) -> StackPoolTransport:
    return StackPoolTransport(keepalive_expiry=5.0, max_idle_per_origin=8, ssl_context=ssl_context)


class Replies:
    """A raw server handler: reads each request head and answers with the next canned reply;
    remembers what each connection received."""

    def __init__(self, *replies: bytes, close_after: bool = False) -> None:
        self.replies = list(replies)
        self.close_after = close_after
        self.received: list[bytes] = []
        self.connections = 0
        self.lock = threading.Lock()

    def __call__(self, connection: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        while self.replies:
            head = read_request_head(connection)
            if not head:
                return
            self.received.append(head)
            with self.lock:
                reply = self.replies.pop(0)
            connection.sendall(reply)
            if self.close_after:
                connection.shutdown(socket.SHUT_WR)
                return


def exchange(
    url: str, *requests: dict[str, object], transport: StackPoolTransport | None = None
) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=transport or new_transport()) as client:
            return [await client.request(url=url, **request) for request in requests]  # type: ignore[arg-type]

    return anyio.run(run)


def test_an_interim_reply_is_skipped_for_the_real_one():
    handler = Replies(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
    )
    with RawServer(handler) as raw:
        (reply,) = exchange(raw.url, {"method": "GET"})
    assert (reply.status_code, reply.content) == (200, b"ok")
    assert "link" not in reply.headers
    assert reply.headers["content-type"] == "text/plain"


def test_a_reply_to_head_ends_with_its_head_and_its_connection_is_not_reused():
    handler = Replies(
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    )
    with RawServer(handler) as raw:
        second = Replies(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew")
        raw.handler = lambda connection: (handler if handler.connections == 0 else second)(connection)
        head, get = exchange(raw.url, {"method": "HEAD"}, {"method": "GET"})
    assert (head.status_code, head.headers["content-length"], head.content) == (200, "10", b"")
    assert get.content == b"new"  # a new connection: the HEAD one may hold a body nobody reads


def test_a_body_without_length_runs_to_the_close():
    handler = Replies(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", close_after=True)
    with RawServer(handler) as raw:
        (reply,) = exchange(raw.url, {"method": "GET"})
    assert reply.content == b"all of it"


def test_a_body_cut_short_of_its_length_is_an_error():
    handler = Replies(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", close_after=True)
    with RawServer(handler) as raw, pytest.raises(httpx.RemoteProtocolError):
        exchange(raw.url, {"method": "GET"})


def test_a_streamed_upload_of_unknown_length_goes_chunked():
    received = bytearray()

    def handler(connection: socket.socket) -> None:
        data = read_request_head(connection)
        while not data.endswith(b"0\r\n\r\n"):
            data += connection.recv(65536)
        received.extend(data)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def body():  # type: ignore[no-untyped-def]
        yield b"first "
        yield b""
        yield b"x" * 70_000

    with RawServer(handler) as raw:
        (reply,) = exchange(raw.url, {"method": "POST", "content": body()})
    assert reply.status_code == 200
    head, _, chunks = bytes(received).partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert chunks == b"6\r\nfirst \r\n" + b"%x\r\n" % 70_000 + b"x" * 70_000 + b"\r\n0\r\n\r\n"


def test_a_header_value_with_a_line_break_is_refused_before_anything_is_sent():
    handler = Replies(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with RawServer(handler) as raw, pytest.raises(httpx.LocalProtocolError):
        exchange(raw.url, {"method": "GET", "headers": [(b"x-note", b"a\r\nx-smuggled: 1")]})
    assert handler.received == []


def test_bytes_after_a_complete_reply_keep_its_connection_out_of_the_pool():
    first = Replies(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
    )
    second = Replies(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnew")
    with RawServer(first) as raw:
        raw.handler = lambda connection: (first if first.connections == 0 else second)(connection)
        one, two = exchange(raw.url, {"method": "GET"}, {"method": "GET"})
    assert (one.content, two.content) == (b"ok", b"new")


def test_tls_to_a_backend_whose_certificate_the_context_trusts(tmp_path):
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    def handler(connection: socket.socket) -> None:
        with server_context.wrap_socket(connection, server_side=True) as secure:
            read_request_head(secure)
            secure.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")

    with RawServer(handler) as raw:
        port = raw.url.rsplit(":", 1)[1]
        (reply,) = exchange(
            f"https://localhost:{port}/", {"method": "GET"}, transport=new_transport(client_context)
        )
        assert reply.content == b"secret"
        with pytest.raises(httpx.ConnectError):  # the default context does not trust this authority
            exchange(f"https://localhost:{port}/", {"method": "GET"})


def test_a_streamed_upload_reaches_the_server_piece_by_piece():
    first_seen = threading.Event()

    def handler(connection: socket.socket) -> None:
        data = read_request_head(connection)
        while b"first" not in data:
            data += connection.recv(65536)
        first_seen.set()  # the rest of the body is only produced after this
        while not data.endswith(b"0\r\n\r\n"):
            data += connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def body():  # type: ignore[no-untyped-def]
        yield b"first"
        await anyio.to_thread.run_sync(first_seen.wait, 10)
        assert first_seen.is_set(), "the first piece was held back"
        yield b"second"

    with RawServer(handler) as raw:
        (reply,) = exchange(raw.url, {"method": "POST", "content": body()})
    assert reply.status_code == 200
