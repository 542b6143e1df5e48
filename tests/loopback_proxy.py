"""A small outbound HTTP proxy on 127.0.0.1 for the tests: it forwards absolute-form requests
(``GET http://host/path``) and tunnels ``CONNECT host:port``, records what went through it, and
refuses any target that is not on the loopback interface."""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import socketserver
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Passed:
    """One request the proxy carried."""

    method: str
    target: str  # ``http://host:port/path`` or, for a tunnel, ``host:port``
    proxy_authorization: str | None


class LoopbackProxy:
    """``with LoopbackProxy() as proxy:`` serves on ``proxy.url``; ``proxy.passed`` lists what went through."""

    def __init__(self) -> None:
        self.passed: list[Passed] = []
        self.lock = threading.Lock()

    def __enter__(self) -> LoopbackProxy:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner.handle(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def targets(self) -> list[str]:
        with self.lock:
            return [p.target for p in self.passed]

    def handle(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(65536)
            if not chunk:
                return
            head += chunk
        head, _, rest = head.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers = [line.split(":", 1) for line in header_lines]
        authorization = next((v.strip() for k, v in headers if k.lower() == "proxy-authorization"), None)
        with self.lock:
            self.passed.append(Passed(method, target, authorization))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            self._tunnel(client, host, int(port))
        else:
            self._forward(client, method, target, version, headers, rest)

    def _tunnel(self, client: socket.socket, host: str, port: int) -> None:
        upstream = self._connect(client, host, port)
        if upstream is None:
            return
        client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        _pipe(client, upstream)

    def _forward(
        self,
        client: socket.socket,
        method: str,
        target: str,
        version: str,
        headers: list[list[str]],
        rest: bytes,
    ) -> None:
        url = urlsplit(target)
        upstream = self._connect(client, url.hostname or "", url.port or 80)
        if upstream is None:
            return
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        # One request per connection to the proxy: the origin is told to close after replying.
        kept = [
            f"{k}:{v}"
            for k, v in headers
            if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")
        ]
        head = "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close"]) + "\r\n\r\n"
        upstream.sendall(head.encode("latin-1") + rest)
        _pipe(client, upstream)

    @staticmethod
    def _connect(client: socket.socket, host: str, port: int) -> socket.socket | None:
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return None
        try:
            return socket.create_connection((host.strip("[]"), port), timeout=30)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return None


def _pipe(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""

    def copy(source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for side in (source, target):
                with contextlib.suppress(OSError):
                    side.shutdown(socket.SHUT_RDWR)

    back = threading.Thread(target=copy, args=(upstream, client), daemon=True)
    back.start()
    copy(client, upstream)
    back.join(30)
    upstream.close()
