"""Speculative forwarding when things go wrong before the body has confirmed its route: a reply
that breaks off, a refuted route through an outbound proxy, and the memory an early answer
costs."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import Callable

import pytest

from ampbridge import proxy as proxy_module
from ampbridge.request_body import RequestBody
from ampbridge.speculation import Speculation

from .loopback_proxy import LoopbackProxy
from .servers import ServerThread, read_request_head
from .test_speculative_forwarding import (
    EARLY_AT,
    LOCAL,
    MESSAGES,
    REMOTE,
    Exchange,
    Hop,
    assert_cut_short,
    assert_received_once,
    declared_length,
    model_body,
    post_held,
    routing,
)


class BrokenEarlyHop(Hop):
    """A next hop that, after ``EARLY_AT`` bytes of a body, sends the head of a JSON reply and
    closes before any of that reply's body (a crashed worker, a proxy cutting the stream): a
    reply that breaks off after its head. ``answered_early`` is set once its side is closed."""

    def converse(self, connection: socket.socket, begun: list[Exchange]) -> None:
        pending = read_request_head(connection)
        if b"\r\n\r\n" not in pending:
            return
        head, _, pending = pending.partition(b"\r\n\r\n")
        exchange = Exchange(head, declared_length(head))
        self.exchanges.append(exchange)
        begun.append(exchange)
        exchange.body += pending
        while len(exchange.body) < EARLY_AT:
            chunk = connection.recv(1 << 16)
            if not chunk:
                return
            exchange.body += chunk
        connection.sendall(
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            f"X-Served-By: {self.name}\r\n\r\n".encode()
        )
        connection.shutdown(socket.SHUT_WR)
        self.answered_early.set()
        connection.settimeout(10)
        while chunk := connection.recv(1 << 16):
            exchange.body += chunk


@pytest.mark.parametrize(
    ("first", "last", "broken_side"),
    [
        (REMOTE, LOCAL, "upstream"),  # the Amp upstream breaks off; the body's end names a local model
        (LOCAL, REMOTE, "local"),  # the local backend breaks off; the body's end names an Amp model
    ],
)
def test_a_reply_breaking_off_on_an_unconfirmed_route_does_not_answer_the_client(
    bridge: Callable[..., ServerThread], first: str, last: str, broken_side: str
) -> None:
    """The speculated hop's reply head is held (GzipUnwrap sniffing / the response fixer
    collecting JSON), then the reply breaks: ``ReplyBroken`` leaves ``AmpFallback`` before the
    body has been read to its end and checked, and the dispatcher answers 502 for a route the
    whole body refutes. The call must go where its last model says."""
    with (
        BrokenEarlyHop("broken") as broken,
        Hop("anthropic-backend") as anthropic,
        Hop("amp-upstream") as upstream,
    ):
        local, remote = (anthropic, broken) if broken_side == "upstream" else (broken, upstream)
        ampbridge = bridge(routing(local, remote))
        served = anthropic if last == LOCAL else upstream
        body = model_body(f'"model": "{first}"'.encode(), tail=f', "model": "{last}"'.encode())
        response, in_time = post_held(ampbridge.url + MESSAGES, body, broken.answered_early)
        assert in_time and broken.exchanges, "the broken hop was not sent the body while it arrived"
        assert_cut_short(broken)
        assert response.status_code == 200, response.text
        assert response.headers["x-served-by"] == served.name
        assert_received_once(served, body)


# --- through an outbound proxy (httpx's own transport, not the pool) --------------------------


def test_a_refuted_route_through_an_outbound_proxy_is_cut_short_and_routed_again(
    bridge: Callable[..., ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a proxy the request goes out by httpx's own transport (httpcore), not the pool:
    the speculated hop must still be cut short, and the call go once where its last model says.
    The exchange's disconnect watcher is started at once (it starts 50-100 ms into an exchange,
    which any real upload outlasts), so it is waiting when the body is refuted."""
    monkeypatch.setattr(proxy_module, "WATCH_AFTER", 0.0)
    with (
        LoopbackProxy() as proxy,
        Hop("anthropic-backend") as local,
        Hop("amp-upstream") as upstream,
    ):
        ampbridge = bridge(routing(local, upstream), environ={"HTTP_PROXY": proxy.url})
        body = model_body(b'"model": "claude-opus-4-7"', tail=b', "model": "claude-remote-only"')
        response, in_time = post_held(ampbridge.url + MESSAGES, body, local.reached)
        assert in_time and local.exchanges, "not streamed"
        assert len(proxy.targets()) == 2, proxy.targets()  # the speculated call and the one routed again
        assert response.status_code == 200
        assert response.headers["x-served-by"] == "amp-upstream"
        assert_received_once(upstream, body)
        assert local.complete() == []
        assert_cut_short(local)


# --- memory when a next hop answers early ------------------------------------------------------


def test_an_early_answer_does_not_copy_the_rest_of_the_body() -> None:
    """A next hop that answers after its first pieces (an auth error, a 413) makes ``gate`` read
    and check the rest; what the hop has not had is handed on from the body itself, never copied
    whole (that would be twice the body, kept to the call's end by a hop that never reads it).
    What is allocated from the early answer on is measured: the body's own buffer exists by
    then."""
    size, piece = 8 << 20, 256 * 1024
    body = b'{"model": "m", "pad": "' + b"x" * (size - 26) + b'"}'
    pieces = [body[i : i + piece] for i in range(0, len(body), piece)]

    async def main() -> int:
        sent = 0

        async def receive() -> dict[str, object]:
            nonlocal sent
            sent += 1
            return {"type": "http.request", "body": pieces[sent - 1], "more_body": sent < len(pieces)}

        speculation = Speculation.of({"headers": [(b"content-length", b"%d" % len(body))]}, receive, 64 << 20)
        assert speculation is not None
        assert await speculation.leading_model() == "m"

        async def keeps(whole: RequestBody) -> bool:
            return True

        speculation.check = keeps
        for _ in range(2):  # the hop reads two pieces (the body's buffer is made), then answers
            await speculation.receive()

        async def client(message: object) -> None:
            pass

        tracemalloc.start()
        try:
            await speculation.gate(client)({"type": "http.response.start", "status": 401})
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    allocated = asyncio.run(main())
    assert allocated < size // 4, f"{allocated / size:.2f}x the body allocated while the early answer waited"
