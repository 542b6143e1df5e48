"""Mount ampbridge's Amp API in your own Starlette app, serving some models yourself.

Run:  uvicorn examples.mount_in_starlette:app --port 8317 --no-proxy-headers
Then point Amp at http://localhost:8317. Calls for ``my-model*`` are answered by ``my_models``
below; every other model call, and Amp's login, threads and telemetry, go to ampcode.com.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

import ampbridge


async def chat_completions(request: Request) -> JSONResponse:
    """A stand-in for your model server: OpenAI chat completions for the models you serve."""
    payload = await request.json()
    return JSONResponse(
        {
            "id": "chatcmpl-local",
            "object": "chat.completion",
            "created": 0,
            "model": payload["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "served locally"},
                    "finish_reason": "stop",
                }
            ],
        }
    )


my_models = Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"])])

# Settings from the config file and environment, as `ampbridge serve` reads them; your own model
# server in place of the configured providers. No lifespan needed: it starts on first use.
amp = ampbridge.app(local_app=my_models, local_models=["my-model*"])

app = Starlette(routes=[Mount("/api", app=amp), Mount("/", app=my_models)])
