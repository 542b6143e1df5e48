"""``ampbridge check --probe``: does the Amp upstream answer, and does each backend?

One request to the upstream (``POST /api/internal?getUserInfo``, the first call Amp makes, with
the Amp key ampbridge would send, so the answer says whether that key is accepted) and one model
list request to each backend, each with a short deadline. Only statuses and error class names are
reported, never a key or a reply body.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import anyio
import httpx

from ..backend import Backend
from ..http_client import SharedClient

PROBE_TIMEOUT = 5.0
UPSTREAM_PROBE_PATH = "/api/internal?getUserInfo"
UPSTREAM_PROBE_BODY = b'{"method":"getUserInfo","params":{}}'


@dataclass
class ProbeResult:
    ok: bool
    detail: str
    models: list[str] = field(default_factory=list)


def _failure(error: Exception) -> str:
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return f"no answer within {PROBE_TIMEOUT:g} s"
    if isinstance(error, httpx.HTTPStatusError):
        return f"answered HTTP {error.response.status_code}"
    return f"unreachable ({type(error).__name__})"


def _upstream_verdict(status: int, key_sent: bool) -> tuple[bool, str]:
    if status in (401, 403):
        if key_sent:
            return False, f"answered HTTP {status}: it refuses the Amp key"
        return False, f"answered HTTP {status}: it wants an Amp key and none was found"
    if 200 <= status < 300:
        return True, f"answered HTTP {status}" + ("; the Amp key is accepted" if key_sent else "")
    return status < 500, f"answered HTTP {status}"


async def probe_upstream(client: httpx.AsyncClient, upstream_url: str, key: str | None) -> ProbeResult:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    started = time.monotonic()
    try:
        with anyio.fail_after(PROBE_TIMEOUT):
            response = await client.post(
                upstream_url.rstrip("/") + UPSTREAM_PROBE_PATH, content=UPSTREAM_PROBE_BODY, headers=headers
            )
    except Exception as error:  # any failure is a finding to report, not a crash
        return ProbeResult(False, _failure(error))
    ok, detail = _upstream_verdict(response.status_code, bool(key))
    return ProbeResult(ok, f"{detail} ({(time.monotonic() - started) * 1000:.0f} ms)")


async def probe_backend(backend: Backend, client: httpx.AsyncClient) -> ProbeResult:
    """Ask ``backend`` for its model list (this fills its ``listed`` and ``discovered``)."""
    try:
        with anyio.fail_after(PROBE_TIMEOUT):
            await backend.discover(client)
    except Exception as error:  # a backend answering garbage is a finding too
        return ProbeResult(False, _failure(error))
    return ProbeResult(True, f"reachable, lists {len(backend.listed)} models", list(backend.listed))


async def probe_all(
    shared: SharedClient, upstream_url: str, upstream_proxy: str, key: str | None, backends: list[Backend]
) -> tuple[ProbeResult | None, list[ProbeResult]]:
    """The upstream's result (None when there is no upstream) and each backend's, concurrently;
    each through the outbound proxy the server would use."""
    results: list[ProbeResult | None] = [None] * (len(backends) + 1)

    async def upstream() -> None:
        results[0] = await probe_upstream(shared.client_for(upstream_proxy), upstream_url, key)

    async def one(index: int, backend: Backend) -> None:
        results[index + 1] = await probe_backend(backend, shared.client_for(backend.proxy_url))

    async with shared, anyio.create_task_group() as tasks:
        if upstream_url:
            tasks.start_soon(upstream)
        for index, backend in enumerate(backends):
            tasks.start_soon(one, index, backend)
    backend_results = [result for result in results[1:] if result is not None]
    return results[0], backend_results
