"""``/readyz``: 200 only when every configured part is usable, 503 with the reason otherwise."""

from __future__ import annotations

import anyio
import httpx

from ampbridge.readiness import Readiness, ReadinessEndpoint


def readyz(readiness: Readiness, method: str = "GET") -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=ReadinessEndpoint(readiness))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.request(method, "/readyz")

    return anyio.run(get)


def test_not_ready_until_every_configured_part_has_answered() -> None:
    now = [1000.0]
    readiness = Readiness(backends=["ollama", "claude"], clock=lambda: now[0])
    first = readyz(readiness)
    assert first.status_code == 503
    assert first.json() == {
        "ready": False,
        "upstream": {"configured": True, "ok": False, "detail": "no report yet"},
        "backends": {
            "claude": {"ok": False, "detail": "no report yet"},
            "ollama": {"ok": False, "detail": "no report yet"},
        },
    }
    readiness.backend("ollama", True, "3 models")
    readiness.backend("claude", True, "configured models")
    assert readyz(readiness).status_code == 503  # the upstream has not answered yet
    readiness.upstream(True, "HTTP 200")
    now[0] += 12
    ready = readyz(readiness)
    assert ready.status_code == 200
    assert ready.headers["cache-control"] == "no-store"
    assert ready.json()["ready"] is True
    assert ready.json()["backends"]["ollama"] == {"ok": True, "detail": "3 models", "age_seconds": 12.0}


def test_a_failing_backend_or_upstream_makes_it_unready_with_the_reason() -> None:
    readiness = Readiness(backends=["ollama"])
    readiness.backend("ollama", True)
    readiness.upstream(True)
    assert readyz(readiness).status_code == 200
    readiness.upstream(False, "connect error")
    answer = readyz(readiness)
    assert answer.status_code == 503
    assert answer.json()["upstream"]["detail"] == "connect error"
    readiness.upstream(True)
    readiness.backend("ollama", False, "listing models timed out")
    answer = readyz(readiness)
    assert answer.status_code == 503
    assert answer.json()["backends"]["ollama"]["detail"] == "listing models timed out"


def test_a_disabled_upstream_and_no_backends_is_ready() -> None:
    readiness = Readiness(upstream_configured=False)
    answer = readyz(readiness)
    assert answer.status_code == 200
    assert answer.json() == {"ready": True, "upstream": {"configured": False}, "backends": {}}


def test_a_reload_keeps_what_is_known_about_parts_that_stay() -> None:
    readiness = Readiness(backends=["ollama", "old"])
    readiness.backend("ollama", True)
    readiness.backend("old", False, "down")
    readiness.upstream(True)
    readiness.configure(backends=["ollama", "new"], upstream_configured=True)
    readiness.backend("gone", True)  # a late report for a removed backend is ignored
    answer = readyz(readiness).json()
    assert set(answer["backends"]) == {"ollama", "new"}
    assert answer["backends"]["ollama"]["ok"] is True
    assert answer["backends"]["new"] == {"ok": False, "detail": "no report yet"}
    assert answer["upstream"]["ok"] is True


def test_head_works_and_other_methods_are_refused() -> None:
    readiness = Readiness(upstream_configured=False)
    assert readyz(readiness, "HEAD").status_code == 200
    assert readyz(readiness, "DELETE").status_code == 405
