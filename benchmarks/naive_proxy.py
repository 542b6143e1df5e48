"""The baseline: the reverse proxy most people would write first (Starlette + httpx, streaming).

Run:  python -m benchmarks.naive_proxy PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

UPSTREAM = sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:9"


@asynccontextmanager
async def lifespan(app: Starlette):
    async with httpx.AsyncClient(base_url=UPSTREAM, timeout=None) as client:
        app.state.client = client
        yield


async def forward(request: Request) -> StreamingResponse:
    client: httpx.AsyncClient = request.app.state.client
    headers = [(k, v) for k, v in request.headers.raw if k.lower() not in (b"host", b"connection")]
    upstream = client.build_request(
        request.method,
        request.url.path,
        params=request.query_params,
        headers=headers,
        content=request.stream(),
    )
    response = await client.send(upstream, stream=True)
    return StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        headers={
            k: v
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        },
        background=BackgroundTask(response.aclose),
    )


app = Starlette(
    routes=[Route("/{path:path}", forward, methods=["GET", "POST", "PUT", "DELETE"])], lifespan=lifespan
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
    )
