"""Amp's API inside a FastAPI app: the configured providers, and everything else to Amp.

Run:  AMPBRIDGE_CONFIG=config.yaml uvicorn examples.fastapi_app:app --port 8317 --no-proxy-headers
Then point Amp at http://localhost:8317. ``ampbridge.app()`` reads the config file and the
environment as ``ampbridge serve`` does. No ``lifespan=`` is needed: the bridge starts on its
first request. (If you do run it, ``FastAPI(lifespan=amp.lifespan)``, its background jobs run
there and its HTTP client is closed on shutdown.)

``amp.root`` covers the routes that cannot live under ``/api`` (``/actors/...``, ``/healthz``,
``/readyz``, ``/metrics``, the browser pages): mount it last, at ``/``, after your own routes.
"""

from __future__ import annotations

from fastapi import FastAPI

import ampbridge

amp = ampbridge.app()

app = FastAPI()


@app.get("/hello")
async def hello() -> dict[str, str]:
    """One of your own routes, beside the bridge."""
    return {"hello": "from the host app"}


app.mount("/api", amp)
app.mount("/", amp.root)
