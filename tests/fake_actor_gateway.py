"""A fake Amp upstream with a thread-actor gateway that judges credentials the way Amp's cloud
does, so a relay's mistakes show up as refusals rather than passing unnoticed.

- ``POST /api/thread-actors`` needs one of the upstream's own Amp keys (``Authorization: Bearer``);
  it answers ``threadId``, ``wsToken``, ``ownerUserId``, ``threadVersion`` (the native CLI's
  reply shape), minting a fresh ``wsToken`` for that thread.
- The actor gateway (``/actors/gateway/threadActor/websocket/`` and ``.../request/...``) admits a
  request whose conn params (subprotocol ``rivet_conn_params.<urlencoded JSON>`` or header
  ``x-rivet-conn-params``) hold a ``wsToken`` it minted for the thread named by ``rvt-key``, or an
  ``apiKey`` that is one of its Amp keys. Anything else is refused before the handshake: 401 with
  no credential, 403 with a wrong one. The same judge answers HTTP and WebSocket.
- On the socket it speaks like a thread actor: a ``thread_features`` notification first, a
  ``result`` for every JSON-RPC request, ``pong`` for the literal text ``ping``.

Its conn params parser is its own (not ampbridge's), so the two cannot share a mistake.
"""

from __future__ import annotations

import json
import secrets
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.types import Receive, Scope, Send

from .servers import Recorded, RecordingServer, respond

GATEWAY = "/actors/gateway/threadActor"
CONN_PARAMS_PREFIX = "rivet_conn_params."


def parse_conn_params(raw: str) -> dict[str, Any] | None:
    for text in (raw, unquote(raw)):
        try:
            value = json.loads(text)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def conn_params_of(scope: Scope) -> list[dict[str, Any]]:
    """Every conn params object the request carries (subprotocol and header)."""
    raws = [
        p[len(CONN_PARAMS_PREFIX) :]
        for p in scope.get("subprotocols") or []
        if p.startswith(CONN_PARAMS_PREFIX)
    ]
    raws += [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-rivet-conn-params"]
    return [params for raw in raws if (params := parse_conn_params(raw)) is not None]


class FakeActorGateway(RecordingServer):
    """``amp_keys``: the Amp keys this upstream knows. ``choose``: which offered subprotocol the
    socket accepts, ``"rivet"`` or ``"conn_params"`` (both legal: a server may pick any offered).
    ``routing_token``: when set, the gateway also wants ``rvt-token`` with that value (as Amp's
    cloud wants its public routing token), else it refuses with 403."""

    def __init__(
        self, amp_keys: set[str], *, choose: str = "rivet", routing_token: str | None = None
    ) -> None:
        super().__init__("fake-actor-gateway")
        self.amp_keys = set(amp_keys)
        self.choose = choose
        self.routing_token = routing_token
        self.tokens: dict[str, str] = {}  # wsToken -> thread id
        self.frames: list[tuple[int, str, str]] = []  # (socket number, "in"/"out", text)
        self.refusals: list[tuple[str, int]] = []  # (path, status)
        self.route(lambda m, p: True, self._anything)
        self.route(lambda m, p: m == "POST" and p == "/api/thread-actors", self._create_thread_actor)
        self.route(lambda m, p: p.startswith(GATEWAY + "/request/"), self._actor_request)
        self.freeze()

    def reset(self) -> None:
        super().reset()
        self.tokens.clear()
        self.frames.clear()
        self.refusals.clear()

    def _bearer(self, rec: Recorded) -> str | None:
        value = rec.header("authorization") or ""
        return value[len("Bearer ") :] if value.startswith("Bearer ") else None

    def judge(self, scope: Scope) -> int:
        """200 when the actor gateway admits the request, else the status it refuses it with."""
        query = parse_qs(scope.get("query_string", b"").decode())
        if self.routing_token is not None and query.get("rvt-token") != [self.routing_token]:
            return 403
        thread = (query.get("rvt-key") or [""])[0]
        presented = conn_params_of(scope)
        if not presented:
            return 401
        for params in presented:
            token, api_key = params.get("wsToken"), params.get("apiKey")
            if isinstance(token, str) and self.tokens.get(token) == thread:
                return 200
            if isinstance(api_key, str) and api_key in self.amp_keys:
                return 200
        return 403

    async def _anything(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        await respond(send, 200, json.dumps({"upstream": True, "path": rec.path}).encode())

    async def _create_thread_actor(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        if self._bearer(rec) not in self.amp_keys:
            await respond(send, 401, b'{"error":"unauthorized"}')
            return
        body = json.loads(rec.body or b"{}")
        thread = body.get("threadId") or f"T-{secrets.token_hex(4)}-0000-4000-8000-{secrets.token_hex(6)}"
        token = "wst_" + secrets.token_urlsafe(18)
        self.tokens[token] = thread
        reply = {"threadId": thread, "wsToken": token, "ownerUserId": "user-1", "threadVersion": 0}
        await respond(send, 200, json.dumps(reply).encode())

    async def _actor_request(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        status = self.judge(scope)
        if status != 200:
            self.refusals.append((rec.path, status))
            await respond(send, status, json.dumps({"error": "actor gateway refused"}).encode())
            return
        await respond(send, 200, json.dumps({"imported": json.loads(rec.body or b"{}")}).encode())

    async def websocket(self, scope: Scope, receive: Receive, send: Send, recorded: Recorded) -> None:
        await receive()  # websocket.connect
        status = self.judge(scope)
        if status != 200:
            self.refusals.append((recorded.path, status))
            body = b'{"error":"actor gateway refused"}'
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return
        offered: list[str] = list(scope.get("subprotocols") or [])
        if self.choose == "conn_params":
            chosen = next(p for p in offered if p.startswith(CONN_PARAMS_PREFIX))
        else:
            chosen = "rivet" if "rivet" in offered else None
        number = len(self.websockets)
        await send({"type": "websocket.accept", "subprotocol": chosen})
        await self._say(
            send,
            number,
            json.dumps({"jsonrpc": "2.0", "method": "thread_features", "params": {"features": []}}),
        )
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                recorded.events.append(f"disconnect:{message.get('code')}")
                return
            text = message.get("text")
            if text is None:
                continue
            self.frames.append((number, "in", text))
            if text == "ping":
                await self._say(send, number, "pong")
                continue
            request = json.loads(text)
            if "id" in request:
                await self._say(
                    send, number, json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {}})
                )

    async def _say(self, send: Send, number: int, text: str) -> None:
        self.frames.append((number, "out", text))
        await send({"type": "websocket.send", "text": text})
