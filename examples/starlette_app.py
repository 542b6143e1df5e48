"""Amp's API inside your own Starlette app: the configured providers, and everything else to Amp.

Run:  AMPBRIDGE_CONFIG=config.yaml uvicorn examples.starlette_app:app --port 8317 --no-proxy-headers
Then point Amp at http://localhost:8317. ``ampbridge.app()`` reads the config file and the
environment as ``ampbridge serve`` does: model calls for models a provider serves are answered by
that provider, the rest of ``/api`` (login, threads, telemetry, other models) goes to Amp.

No ``lifespan=`` is needed: the bridge starts on its first request. ``amp.root`` covers the routes
that cannot live under ``/api`` (Amp's thread-actor gateway ``/actors/...``, ``/healthz``,
``/readyz``, ``/metrics``, the browser pages): mount it last, at ``/``, after your own routes.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import ampbridge


async def hello(request: Request) -> PlainTextResponse:
    """One of your own routes, beside the bridge."""
    return PlainTextResponse("hello from the host app")


amp = ampbridge.app()

app = Starlette(routes=[Route("/hello", hello)])
app.mount("/api", amp)
app.mount("/", amp.root)
