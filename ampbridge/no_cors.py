"""``RefuseCors``: no route of ampbridge takes part in CORS. Preflights get 403, so no web page
can make a browser send a non-simple request; the proxies strip every ``Access-Control-*``
header from replies, so no page can read one."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import refuse


class RefuseCors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            await refuse(scope, receive, send, 403, "CORS is not allowed on this route")
            return
        await self.app(scope, receive, send)
