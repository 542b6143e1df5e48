"""What outlives one version of the settings: where they come from, the app built from the
current version (swapped whole on reload), the shared HTTP client, and the background jobs.

Resources open on first use, so an app mounted in a host that never runs its lifespan works;
when the lifespan does run, the jobs run inside it and everything is closed on shutdown. A
reload that fails to load or to build is logged as not applied and the running app stays.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
from starlette.types import Receive, Send

from .actors import RoutingTokenSource, is_loopback_host
from .amp_cli import SearchRoots, find_amp_clis, installed_routing_token
from .builder import BuiltApp, LocalServer, build
from .dispatch import Services
from .http_client import SharedClient
from .ledger import UsageLedger
from .logs import configure_logging
from .settings import ConfigError, Settings, find_config_file, load_settings
from .settings_diff import describe_changes
from .supervisor import Job, run_jobs
from .user_dirs import user_data_dir

logger = logging.getLogger("ampbridge")

DISCOVERY_WAIT_SECONDS = 5.0
WATCH_INTERVAL_SECONDS = 1.0
DISCOVERY_REFRESH_SECONDS = 300.0
DISCOVERY_RETRY_SECONDS = 30.0


@dataclass
class SettingsSource:
    """Where settings come from: given outright, or the config file + environment + overrides
    (read the way ``ampbridge serve`` reads them)."""

    config_path: str | os.PathLike[str] | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    settings: Settings | None = None

    def load(self) -> Settings:
        if self.settings is not None:
            return self.settings
        return load_settings(self.config_path, environ=self.environ, **self.overrides)

    def config_file(self) -> Path | None:
        if self.settings is not None:
            return None
        try:
            return find_config_file(self.config_path, self.environ)
        except ConfigError:
            return None


class Runtime:
    def __init__(
        self,
        source: SettingsSource,
        *,
        client: SharedClient | None = None,
        local: LocalServer | None = None,
        watch_config: bool = True,
        configure_logs: bool = False,
        standalone: bool = False,
        services: Services | None = None,
        builder: Callable[..., BuiltApp] = build,
    ) -> None:
        self.source = source
        self.client = client or SharedClient(environ=source.environ)
        self.local = local
        self.watch_config = watch_config
        self.configure_logs = configure_logs
        self.standalone = standalone
        self.services = services or Services()
        self.builder = builder
        self.built: BuiltApp | None = None
        self.discovery_complete = True
        self._start_lock = anyio.Lock()
        self._jobs_running = False
        self._detached_jobs: asyncio.Task[None] | None = None

    # --- the current app ----------------------------------------------------------------

    async def current(self) -> BuiltApp:
        """The app of the current settings; on first use, load and build it (and start the
        background jobs when no lifespan runs them). Raises ConfigError."""
        built = self.built
        if built is not None:
            return built
        async with self._start_lock:
            if self.built is None:
                settings = self.source.load()
                self._apply_logging(settings)
                self._prepare_services(settings)
                self.built = self._build(settings)
                await self._discover(only_undiscovered=False)
                self._start_detached_jobs()
        assert self.built is not None
        return self.built

    def _build(self, settings: Settings) -> BuiltApp:
        built = self.builder(
            settings,
            client=self.client,
            environ=self.source.environ,
            services=self.services,
            local=self.local,
            previous=self.built,
            standalone=self.standalone,
        )
        backends = built.backends.backends if built.backends is not None else []
        self.services.readiness.configure(
            backends=[b.name for b in backends], upstream_configured=bool(settings.amp_upstream_url)
        )
        return built

    def _prepare_services(self, settings: Settings) -> None:
        """The parts that live as long as the runtime, made once from the first settings."""
        services = self.services
        if services.ledger is None:
            path = user_data_dir("ampbridge", self.source.environ) / "usage.db"
            services.ledger = UsageLedger(path, retention_days=settings.usage_retention_days)
        if services.routing_token is None:
            home = Path(self.source.environ.get("HOME") or Path.home())
            roots = SearchRoots.from_environment(self.source.environ, home)
            services.routing_token = RoutingTokenSource(
                configured=settings.amp_actor_routing_token.get_secret_value(),
                discover=lambda: installed_routing_token(find_amp_clis(roots, version_of=lambda _: None)),
            )

    def _apply_logging(self, settings: Settings) -> None:
        if self.configure_logs:
            configure_logging(debug=settings.debug, to_file=settings.logging_to_file)

    # --- lifespan -------------------------------------------------------------------------

    @asynccontextmanager
    async def lifespan(self, _app: object = None) -> AsyncIterator[None]:
        """Start (load, build, discover), run the jobs while serving, close on the way out.
        Usable as a Starlette/FastAPI ``lifespan=``."""
        self._jobs_running = True  # this lifespan runs them: no detached copy
        try:
            await self.current()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run_jobs, self.jobs())
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            self._jobs_running = False
            await self.client.aclose()

    async def serve_lifespan(self, receive: Receive, send: Send) -> None:
        """The ASGI lifespan protocol around ``lifespan``: ``startup.failed`` only before
        ``startup.complete``, never after."""
        await receive()  # lifespan.startup
        started = False
        try:
            async with self.lifespan():
                started = True
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
        except Exception as error:
            if started:
                logger.error("ampbridge shut down with an error: %s", error)
            else:
                message = str(error) if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
                logger.error("ampbridge could not start: %s", message)
                await send({"type": "lifespan.startup.failed", "message": message})
                return
        await send({"type": "lifespan.shutdown.complete"})

    def _start_detached_jobs(self) -> None:
        """Without a lifespan, the jobs run as a task of the server's event loop (asyncio's: under
        another event loop they wait for a lifespan)."""
        if self._jobs_running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._jobs_running = True
        self._detached_jobs = loop.create_task(run_jobs(self.jobs()))

    async def aclose(self) -> None:
        """Stop detached jobs and close the shared client (for hosts that manage it by hand)."""
        task, self._detached_jobs = self._detached_jobs, None
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
            self._jobs_running = False
        await self.client.aclose()

    # --- background jobs ----------------------------------------------------------------

    def jobs(self) -> list[Job]:
        jobs = [
            Job("model discovery", self._keep_discovering, DISCOVERY_RETRY_SECONDS),
            Job("actor routing token", self._find_routing_token, DISCOVERY_RETRY_SECONDS),
        ]
        if self.services.ledger is not None:
            jobs.append(Job("usage ledger", self.services.ledger.run, 30.0))
        if self.watch_config and self.source.config_file() is not None:
            jobs.append(Job("config watcher", self._watch_config, WATCH_INTERVAL_SECONDS))
        return jobs

    async def _discover(self, *, only_undiscovered: bool) -> None:
        backends = self.built.backends if self.built else None
        if backends is None:
            return
        if backends.needs_discovery:
            with anyio.move_on_after(DISCOVERY_WAIT_SECONDS):
                self.discovery_complete = await backends.discover_all(only_undiscovered=only_undiscovered)
        for backend in backends.backends:
            known = not backend.needs_discovery or backend.discovered is not None
            self.services.readiness.backend(backend.name, known, "" if known else "model list not known yet")

    async def _find_routing_token(self) -> None:
        """Read the actor routing token from the installed Amp CLI once, off the event loop (it
        may mean reading a large binary), before the first ``/actors`` request needs it."""
        url = self.built.settings.amp_upstream_url if self.built else ""
        if self.services.routing_token is not None and url and not is_loopback_host(httpx.URL(url).host):
            await anyio.to_thread.run_sync(self.services.routing_token.token)

    async def _keep_discovering(self) -> None:
        """Refresh the model lists of backends configured without ``models``: every 5 minutes,
        every 30 s while a listing fails (the first one included)."""
        while True:
            complete = self.discovery_complete
            await anyio.sleep(DISCOVERY_REFRESH_SECONDS if complete else DISCOVERY_RETRY_SECONDS)
            await self._discover(only_undiscovered=False)

    async def _watch_config(self) -> None:
        """Polls the config file (in-place writes and atomic renames alike) and applies changes."""
        path = self.source.config_file()
        if path is None:
            return
        seen = _file_state(path)
        while True:
            await anyio.sleep(WATCH_INTERVAL_SECONDS)
            state = _file_state(path)
            if state != seen:
                seen = state
                await self.reload()

    async def reload(self) -> bool:
        """Re-read the settings and swap in a new app; keep the running one when the new
        settings do not load or do not build."""
        previous = self.built
        try:
            settings = self.source.load()
            built = self._build(settings)
        except Exception as error:
            reason = str(error) if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
            logger.error("config change not applied, the previous settings stay in force: %s", reason)
            self.services.metrics.reload(False)
            return False
        if previous is not None and (settings.host, settings.port) != (
            previous.settings.host,
            previous.settings.port,
        ):
            logger.warning("host and port changes take effect after a restart")
        self._apply_logging(settings)
        self.built = built
        await self._discover(only_undiscovered=True)
        changes = describe_changes(previous.settings, settings) if previous is not None else []
        for change in changes:
            logger.info("configuration changed: %s", change)
        logger.info("configuration reloaded (%d change%s)", len(changes), "" if len(changes) == 1 else "s")
        self.services.metrics.reload(True)
        return True


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
