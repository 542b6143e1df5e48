"""A fast fake model backend and Amp upstream for the benchmarks: raw ASGI, no framework.

Any POST whose body says ``"stream": true`` gets an SSE stream of EVENTS events, GAP seconds
apart (Chat Completions chunks on ``/v1/chat/completions``, Anthropic events elsewhere); any other
request gets a small JSON reply once its body is read (and discarded).

Run:  python -m benchmarks.fake_backend PORT
"""

from __future__ import annotations

import asyncio
import sys

import uvicorn

EVENTS = 50
GAP_SECONDS = 0.02
REPLY = (
    b'{"id":"msg_1","type":"message","role":"assistant","model":"bench-model",'
    b'"content":[{"type":"text","text":"OK"}]}'
)
EVENT = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"benchmark token"}}\n\n'
)
CHAT_EVENT = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":0,"model":"bench-translated",'
    b'"choices":[{"index":0,"delta":{"content":"benchmark token"},"finish_reason":null}]}\n\n'
)
CHAT_END = b"data: [DONE]\n\n"
STREAM_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(REPLY)).encode())]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    streamed = False
    head = b""
    while True:
        message = await receive()
        body = message.get("body", b"")
        if len(head) < 256:
            head += body[:256]
            streamed = streamed or b'"stream":true' in head or b'"stream": true' in head
        if not message.get("more_body"):
            break
    if not streamed:
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": REPLY})
        return
    chat = scope["path"].endswith("/chat/completions")
    await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
    for _ in range(EVENTS):
        await send({"type": "http.response.body", "body": CHAT_EVENT if chat else EVENT, "more_body": True})
        await asyncio.sleep(GAP_SECONDS)
    await send({"type": "http.response.body", "body": CHAT_END if chat else b""})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=False,
        log_level="warning",
        timeout_keep_alive=75,
        backlog=4096,
    )
