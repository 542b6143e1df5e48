"""The gates in front of the Amp upstream on control-plane routes (SPEC §4.2), in order:
no upstream -> 503; CORS refused (``OPTIONS`` -> 403); the localhost gate; client keys."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from .client_keys import ClientKeyAuth
from .errors import error_response
from .gzip_unwrap import GzipUnwrap
from .localhost import LocalhostOnly

UNAVAILABLE = "amp upstream proxy not available"


class UpstreamUnavailable:
    """Answers every request with 503: no Amp upstream is configured."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await error_response(503, UNAVAILABLE)(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1011, "reason": UNAVAILABLE})


class RefuseCors:
    """No CORS on management routes: preflights get 403, and the proxy strips grants."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await error_response(403, "CORS is not allowed on this route")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def control_plane(
    upstream: ASGIApp | None,
    *,
    localhost_only: bool,
    client_keys: Iterable[str] = (),
    max_decoded_size: int,
) -> ASGIApp:
    """The control-plane route: the upstream behind its gates."""
    if upstream is None:
        return UpstreamUnavailable()
    app: ASGIApp = GzipUnwrap(upstream, max_decoded_size=max_decoded_size)
    app = ClientKeyAuth(app, keys=client_keys)
    app = LocalhostOnly(app, enabled=localhost_only)
    return RefuseCors(app)
