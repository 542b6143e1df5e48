"""``/readyz``: is every configured part usable right now?

``/healthz`` only says the process answers. Readiness is what a supervisor or load balancer
should wait for: each configured local backend has been discovered (or its configured model list
accepted), and the Amp upstream's last answer was a good one. The app reports those facts to a
:class:`Readiness` as it learns them; :class:`ReadinessEndpoint` answers 200 when all are good,
503 otherwise, with the details as JSON. Details are short texts chosen by the app (an error
class, a model count), never a key or a header value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import refuse


@dataclass(frozen=True, slots=True)
class PartState:
    ok: bool
    detail: str
    at: float  # Unix seconds of the report


class Readiness:
    """What the app last learned about each part. A configured part with no report yet is not
    ready: the app should probe the upstream and discover the backends at start."""

    def __init__(
        self,
        *,
        backends: Iterable[str] = (),
        upstream_configured: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.backends: dict[str, PartState | None] = {}
        self.upstream_configured = upstream_configured
        self.upstream_state: PartState | None = None
        self.configure(backends=backends, upstream_configured=upstream_configured)

    def configure(self, *, backends: Iterable[str], upstream_configured: bool) -> None:
        """The parts the current settings configure (at start and after each reload); what is
        known about parts that stay is kept."""
        self.backends = {name: self.backends.get(name) for name in backends}
        if upstream_configured != self.upstream_configured:
            self.upstream_state = None
        self.upstream_configured = upstream_configured

    def backend(self, name: str, ok: bool, detail: str = "") -> None:
        """A backend's discovery result. Reports for backends not configured are ignored."""
        if name in self.backends:
            self.backends[name] = PartState(ok, detail, self.clock())

    def upstream(self, ok: bool, detail: str = "") -> None:
        """The Amp upstream's last answer: ``ok`` when it answered at all without a server error."""
        self.upstream_state = PartState(ok, detail, self.clock())

    def report(self) -> tuple[bool, dict[str, object]]:
        now = self.clock()
        backends = {name: _describe(state, now) for name, state in sorted(self.backends.items())}
        ready = all(state is not None and state.ok for state in self.backends.values())
        upstream: dict[str, object] = {"configured": self.upstream_configured}
        if self.upstream_configured:
            upstream.update(_describe(self.upstream_state, now))
            ready = ready and self.upstream_state is not None and self.upstream_state.ok
        return ready, {"ready": ready, "upstream": upstream, "backends": backends}


def _describe(state: PartState | None, now: float) -> dict[str, object]:
    if state is None:
        return {"ok": False, "detail": "no report yet"}
    return {"ok": state.ok, "detail": state.detail, "age_seconds": round(max(0.0, now - state.at), 1)}


class ReadinessEndpoint:
    """ASGI endpoint: ``GET``/``HEAD`` answer 200 or 503 with the report as JSON."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await refuse(scope, receive, send, 405, "method_not_allowed", "use GET")
            return
        ready, details = self.readiness.report()
        response = Response(
            json.dumps(details, separators=(",", ":")).encode(),
            status_code=200 if ready else 503,
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
        await response(scope, receive, send)
