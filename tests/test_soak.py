"""A bounded soak: 100 concurrent streamed model calls (local and upstream) mixed with
control-plane calls against a real ``ampbridge serve`` process. Every stream's bytes are compared
end to end; the server's memory and descriptors must be flat at the end.

Runs for AMPBRIDGE_SOAK_SECONDS (default 60); ``pytest -m "not soak"`` leaves it out."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import anyio
import httpx
import pytest
import yaml
from starlette.types import Receive, Scope, Send

from .servers import Recorded, RecordingServer, ServerThread
from .test_cli import Served

pytestmark = pytest.mark.soak

STREAMS = 100
CONTROL_CALLS = 10
EVENTS = 30
GAP_SECONDS = 0.01


def stream_bytes(nonce: str) -> list[bytes]:
    head = [
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"' + nonce.encode() + b'"}}\n\n'
    ]
    deltas = [
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
        + f"{nonce}-{i}".encode()
        + b'"}}\n\n'
        for i in range(EVENTS)
    ]
    return head + deltas + [b'event: message_stop\ndata: {"type":"message_stop"}\n\n']


async def streamed_reply(scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
    nonce = rec.json()["metadata"]["user_id"]
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    for event in stream_bytes(nonce):
        await send({"type": "http.response.body", "body": event, "more_body": True})
        await anyio.sleep(GAP_SECONDS)
    await send({"type": "http.response.body", "body": b""})


def process_usage(pid: int) -> tuple[int, int]:
    """(resident memory in bytes, open descriptors) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
    return rss_kib * 1024, len(os.listdir(f"/proc/{pid}/fd"))


def test_soak(tmp_path, upstream):
    seconds = float(os.environ.get("AMPBRIDGE_SOAK_SECONDS", "60"))
    backend = RecordingServer("soak-backend")
    backend.route(lambda m, p: p == "/v1/messages", streamed_reply)
    upstream.route(lambda m, p: p == "/api/provider/anthropic/v1/messages", streamed_reply)
    backend.keep_records = upstream.keep_records = False
    with ServerThread(backend) as backend_thread:
        config = {
            "amp-upstream-url": upstream.url,
            "providers": [
                {
                    "name": "soak",
                    "type": "anthropic",
                    "base-url": backend_thread.url,
                    "models": ["local-model"],
                }
            ],
        }
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        served = Served(cwd=tmp_path)
        try:
            report = asyncio.run(_load(served, seconds))
        finally:
            log = served.stop()
    problems = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert report["mismatched"] == [], (report["mismatched"][:3], problems[:5])
    assert report["errors"] == [], (report["errors"][:3], problems[:5])
    assert problems == []
    assert report["streams"] >= STREAMS * 2
    assert report["control"] >= CONTROL_CALLS
    warm_rss, warm_fds = report["warm"]
    end_rss, end_fds = report["end"]
    assert end_rss - warm_rss < 25 * 1024 * 1024, report
    assert end_fds <= warm_fds + 10, report


async def _load(served: Served, seconds: float) -> dict:
    pid = served.process.pid
    report: dict = {"streams": 0, "control": 0, "mismatched": [], "errors": []}
    deadline = time.monotonic() + seconds
    warm_at = time.monotonic() + max(2.0, seconds * 0.15)
    limits = httpx.Limits(
        max_connections=STREAMS + CONTROL_CALLS + 10,
        max_keepalive_connections=STREAMS + CONTROL_CALLS,
        keepalive_expiry=4.0,
    )
    async with httpx.AsyncClient(base_url=served.url, limits=limits, timeout=60) as client:

        async def streamer(worker: int) -> None:
            iteration = 0
            while time.monotonic() < deadline:
                model = "local-model" if (worker + iteration) % 2 else "upstream-model"
                nonce = f"w{worker}i{iteration}"
                iteration += 1
                try:
                    async with client.stream(
                        "POST",
                        "/api/provider/anthropic/v1/messages",
                        json={"model": model, "stream": True, "metadata": {"user_id": nonce}},
                    ) as response:
                        received = b"".join([chunk async for chunk in response.aiter_raw()])
                except httpx.HTTPError as error:
                    report["errors"].append(f"{nonce}: {error!r}")
                    continue
                if response.status_code != 200 or received != b"".join(stream_bytes(nonce)):
                    report["mismatched"].append((nonce, model, response.status_code, received[:200]))
                report["streams"] += 1

        async def control(worker: int) -> None:
            expected = b'{"ok":true,"result":{"canUseAmpFree":false}}'
            while time.monotonic() < deadline:
                try:
                    response = await client.post("/api/internal?getUserFreeTierStatus", content=b"{}")
                except httpx.HTTPError as error:
                    report["errors"].append(f"control {worker}: {error!r}")
                    continue
                if response.status_code != 200 or response.content.strip() != expected:
                    report["mismatched"].append(("control", response.status_code, response.content[:200]))
                report["control"] += 1
                await asyncio.sleep(0.05)

        async def measure_warm() -> None:
            await asyncio.sleep(max(0.0, warm_at - time.monotonic()))
            report["warm"] = process_usage(pid)

        await asyncio.gather(
            *(streamer(i) for i in range(STREAMS)),
            *(control(i) for i in range(CONTROL_CALLS)),
            measure_warm(),
        )
    await asyncio.sleep(1.0)  # let closed connections settle on the server side
    report["end"] = process_usage(pid)
    return report
