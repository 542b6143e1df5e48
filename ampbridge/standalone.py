"""The ready server: ``uvicorn ampbridge.standalone:app`` or ``ampbridge serve``.

Only composition: the config file and environment give the settings; the settings give the local
backends and the Amp API of ``application``; a small dispatcher puts the routes of SPEC §4 in
front. When the config file changes, everything is rebuilt from the new settings and swapped in
for the next request; requests in flight finish on what they started with.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from .application import amp_api, amp_upstream, upstream_key_resolver
from .backends import REFRESH_SECONDS, RETRY_SECONDS, LocalBackends
from .client_keys import ClientKeyAuth
from .control_plane import control_plane
from .errors import error_response
from .http_client import SharedClient
from .logs import configure_logging
from .safe_paths import SafePaths
from .settings import ConfigError, Settings, find_config_file, load_settings

logger = logging.getLogger("ampbridge")

DISCOVERY_WAIT_SECONDS = 5.0
WATCH_INTERVAL_SECONDS = 1.0

# Root-level pages Amp's login and web links open in a browser (which cannot send a client key).
_BROWSER_ANY_METHOD = re.compile(r"/auth(/.*)?")
_BROWSER_READ_ONLY = re.compile(r"/(threads(/.*)?|threads\.rss|news\.rss|docs(/.*)?|settings(/.*)?)")
_GEMINI_PREFIXES = ("/v1beta/models", "/v1/models/", "/v1alpha/models/")
_LOCAL_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/models",
    }
)


async def healthz(scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"status": "ok"})(scope, receive, send)


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await error_response(404, "not_found", f"No route for {scope['method']} {scope['path']}")(
            scope, receive, send
        )
    elif scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": "not found"})


@dataclass(frozen=True)
class Routes:
    """The apps built from one version of the settings."""

    settings: Settings
    api: ASGIApp
    browser: ASGIApp
    actors: ASGIApp
    local: ASGIApp

    def pick(self, scope: Scope) -> ASGIApp:
        path: str = scope["path"]
        if path.startswith("/api/") or path == "/api":
            return self.api
        if path == "/healthz":
            return healthz
        if _BROWSER_ANY_METHOD.fullmatch(path):
            return self.browser
        if _BROWSER_READ_ONLY.fullmatch(path) and scope.get("method", "GET") in ("GET", "HEAD"):
            return self.browser
        if path.startswith("/actors/"):
            return self.actors
        if path in _LOCAL_PATHS or path.startswith(_GEMINI_PREFIXES):
            return self.local
        return not_found


class Standalone:
    """The standalone ASGI app. Settings come from ``settings`` if given, else from the config
    file (``config_path``, ``AMPBRIDGE_CONFIG``, ``./config.yaml``, the user config dir) and the
    environment, when the app starts."""

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        watch_config: bool = True,
        configure_logs: bool = True,
        client: SharedClient | None = None,
    ) -> None:
        self.environ = os.environ if environ is None else environ
        self.config_path = config_path
        self.overrides = dict(overrides or {})
        self.given_settings = settings
        self.watch_config = watch_config and settings is None
        self.configure_logs = configure_logs
        self.client = client or SharedClient()
        self.routes: Routes | None = None
        self.backends: LocalBackends | None = None

    # --- building -------------------------------------------------------------------------

    def load(self) -> Settings:
        if self.given_settings is not None:
            return self.given_settings
        return load_settings(self.config_path, environ=self.environ, **self.overrides)

    def build(self, settings: Settings) -> Routes:
        backends = LocalBackends(settings.providers, client=self.client, max_body_size=settings.max_body_size)
        if self.backends is not None:
            backends.adopt_discoveries(self.backends)
        self.backends = backends
        upstream = amp_upstream(settings, self.client, upstream_key_resolver(settings, self.environ))
        api = amp_api(settings, local_app=backends, local_models=backends, upstream=upstream)
        gate = {
            "localhost_only": settings.amp_restrict_management_to_localhost,
            "max_decoded_size": settings.max_body_size,
        }
        return Routes(
            settings=settings,
            api=api,  # amp_api checks its paths itself
            browser=SafePaths(control_plane(upstream, **gate)),  # no client keys: browsers cannot send one
            actors=SafePaths(control_plane(upstream, client_keys=settings.client_keys, **gate)),
            local=SafePaths(ClientKeyAuth(backends, keys=settings.client_keys)),
        )

    # --- serving --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        routes = self.routes
        if routes is None:
            raise RuntimeError("ampbridge has not started: its lifespan did not run")
        app = routes.pick(scope)
        if app is routes.api:
            scope = {**scope, "root_path": scope.get("root_path", "") + "/api"}
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            async with AsyncExitStack() as stack:
                await self._start(stack)
                tasks = await stack.enter_async_context(anyio.create_task_group())
                tasks.start_soon(self._keep_discovering)
                if self.watch_config:
                    tasks.start_soon(self._watch_config)
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                tasks.cancel_scope.cancel()
        except Exception as error:
            message = str(error) if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
            logger.error("ampbridge could not start: %s", message)
            await send({"type": "lifespan.startup.failed", "message": message})
            return
        await send({"type": "lifespan.shutdown.complete"})

    async def _start(self, stack: AsyncExitStack) -> None:
        settings = self.load()
        self._apply_logging(settings)
        await stack.enter_async_context(self.client)
        self.routes = self.build(settings)
        assert self.backends is not None
        with anyio.move_on_after(DISCOVERY_WAIT_SECONDS):
            await self.backends.discover_all()

    def _apply_logging(self, settings: Settings) -> None:
        if self.configure_logs:
            configure_logging(debug=settings.debug, to_file=settings.logging_to_file)

    # --- hot reload -------------------------------------------------------------------------

    def config_file(self) -> Path | None:
        try:
            return find_config_file(self.config_path, self.environ)
        except ConfigError:
            return None

    async def _watch_config(self) -> None:
        """Polls the config file (in-place writes and atomic renames alike) and applies changes."""
        path = self.config_file()
        if path is None:
            return
        seen = _file_state(path)
        while True:
            await anyio.sleep(WATCH_INTERVAL_SECONDS)
            state = _file_state(path)
            if state == seen:
                continue
            seen = state
            await self.reload()

    async def reload(self) -> bool:
        """Re-read the settings; keep the running ones when the new ones are invalid."""
        try:
            settings = self.load()
        except ConfigError as error:
            logger.error("config change not applied, the previous settings stay in force: %s", error)
            return False
        assert self.routes is not None
        previous = self.routes.settings
        if (settings.host, settings.port) != (previous.host, previous.port):
            logger.warning("host and port changes take effect after a restart")
        self._apply_logging(settings)
        self.routes = self.build(settings)
        assert self.backends is not None
        with anyio.move_on_after(DISCOVERY_WAIT_SECONDS):
            await self.backends.discover_all(only_undiscovered=True)
        logger.info("configuration reloaded")
        return True

    async def _keep_discovering(self) -> None:
        """Refresh the model lists of backends configured without ``models``."""
        complete = True
        while True:
            await anyio.sleep(REFRESH_SECONDS if complete else RETRY_SECONDS)
            if self.backends is not None:
                complete = await self.backends.discover_all()


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


app = Standalone()
