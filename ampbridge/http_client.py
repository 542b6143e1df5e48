"""The one ``httpx.AsyncClient`` of an app, opened and closed by the app's lifespan."""

from __future__ import annotations

from http.cookiejar import DefaultCookiePolicy
from types import TracebackType

import httpx

from .pool import StackPoolTransport

# Model turns stream for minutes with long silent stretches (thinking); Amp's own SDKs wait 600 s.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=30.0)
# Idle connections are dropped after 4 s, before the 5 s idle timeout of uvicorn and Node.js (the
# usual local model servers and gateways) can close them under a request that reuses one.
DEFAULT_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=4.0)


class SharedClient:
    """Holds the client; every part that forwards asks it for ``.client`` per request."""

    def __init__(
        self, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT, limits: httpx.Limits = DEFAULT_LIMITS
    ) -> None:
        self.timeout = timeout
        self.limits = limits
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The client, opened on first use."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=StackPoolTransport(
                    keepalive_expiry=self.limits.keepalive_expiry or 0.0,
                    max_idle_per_origin=self.limits.max_keepalive_connections or 0,
                ),
                timeout=self.timeout,
                follow_redirects=False,
            )
            # One client serves every user: it must never keep a cookie that a response sets and
            # send it with a later request. Cookies travel only as each client's own header.
            self._client.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        return self._client

    async def __aenter__(self) -> SharedClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
