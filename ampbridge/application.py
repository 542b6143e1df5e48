"""``ampbridge.app()``: Amp's API as an ASGI app to mount at ``/api`` in your own app.

With no arguments it is the whole configured Amp API, read the way ``ampbridge serve`` reads it
(the config file and the environment, the providers as local backends), and it needs no lifespan
plumbing: it starts on its first request. Amp's thread-actor gateway (``/actors/...``), its
browser pages (``/auth``, ``/threads``, ...) and ``/healthz`` live at the server's root, not under
``/api``: ``AmpApp.root`` serves those (mount it at ``/`` after your own routes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from .builder import LocalServer
from .errors import refuse
from .http_client import SharedClient
from .models import LocalModelsLike
from .runtime import Runtime, SettingsSource
from .settings import ConfigError, Settings


class AmpApp:
    """An ASGI app over a ``Runtime``: the routes below ``/api``, or (``.root``) every route."""

    def __init__(self, runtime: Runtime, part: Literal["api", "root"] = "api") -> None:
        self.runtime = runtime
        self.part = part

    def __repr__(self) -> str:
        return f"AmpApp(part={self.part!r})"

    @property
    def root(self) -> AmpApp:
        """The same bridge, serving every route of the standalone server: mount it at ``/``."""
        return AmpApp(self.runtime, "root")

    def lifespan(self, app: object = None) -> AbstractAsyncContextManager[None]:
        """Pass as your app's ``lifespan=`` to run background jobs there and close cleanly."""
        return self.runtime.lifespan(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.runtime.serve_lifespan(receive, send)
            return
        try:
            built = await self.runtime.current()
        except ConfigError as error:
            await refuse(scope, receive, send, 503, "ampbridge_not_configured", str(error))
            return
        await (built.api if self.part == "api" else built.root)(scope, receive, send)


def app(
    *,
    settings: Settings | None = None,
    config: str | os.PathLike[str] | None = None,
    local_app: ASGIApp | None = None,
    local_models: LocalModelsLike | None = None,
    environ: Mapping[str, str] | None = None,
    client: SharedClient | None = None,
    watch_config: bool = True,
    configure_logs: bool = False,
    standalone: bool = False,
    **overrides: Any,
) -> AmpApp:
    """Amp's API, to mount at ``/api``::

        amp = ampbridge.app()
        Starlette(routes=[Mount("/api", app=amp), Mount("/", app=amp.root)])

    ``settings``: use these instead of the config file and environment. ``config``: the config
    file (default: ``$AMPBRIDGE_CONFIG``, ``./config.yaml``, the user config dir).
    ``local_app`` + ``local_models``: your own model server (an ASGI app speaking the standard
    paths) and the models it serves (names and globs, a predicate, or a ``LocalModels``), in
    place of the configured providers. Other keyword arguments override single settings
    (``amp_upstream_url="..."``).
    """
    if (local_app is None) != (local_models is None):
        raise TypeError("local_app and local_models go together")
    if settings is not None and (config is not None or overrides):
        raise TypeError("pass settings, or config and overrides, not both")
    source = SettingsSource(
        config_path=config,
        environ=os.environ if environ is None else environ,
        overrides=overrides,
        settings=settings,
    )
    local = None if local_app is None or local_models is None else LocalServer(local_app, local_models)
    runtime = Runtime(
        source,
        client=client,
        local=local,
        watch_config=watch_config,
        configure_logs=configure_logs,
        standalone=standalone,
    )
    return AmpApp(runtime)
