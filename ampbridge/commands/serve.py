"""``ampbridge serve``: run the standalone server with uvicorn.

Logging is configured here, once, before uvicorn starts (``--log-level``, ``--log-format``, and
the config's ``debug`` and ``logging-to-file``); uvicorn is told not to install its own logging
and the app not to configure it, so ampbridge's, uvicorn's and websockets' lines all share the
format chosen here, also after a config reload.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
from typing import Any

from ..logs import LOG_FORMATS, configure_logging
from ..malloc_tuning import reuse_heap_for_bodies
from ..serve_limits import uvicorn_options
from ..settings import Settings, startup_warnings, warn_once
from ..ws_protocol import RefusalAwareWebSocketProtocol
from .common import LoadedConfig, load_config, local_url

logger = logging.getLogger("ampbridge")

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="bind port (default from config: 8317)")
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        help="log level of ampbridge and uvicorn (default: info; debug when the config says debug: true)",
    )
    parser.add_argument(
        "--log-format", choices=LOG_FORMATS, default="text", help="text lines or JSON lines (default: text)"
    )
    parser.set_defaults(run=cmd_serve)


def server_options(settings: Settings) -> dict[str, Any]:
    """How ``ampbridge serve`` runs uvicorn (the tests run ampbridge the same way)."""
    return {
        "proxy_headers": False,  # the localhost gate must see the real TCP peer
        # The standard library's event loop, not uvloop: uvloop takes one new connection per turn
        # of the loop, so under load a burst of new connections (64 at once: 400 ms for the last)
        # waits behind the busy ones, while asyncio accepts all that are pending at once.
        "loop": "asyncio",
        "server_header": False,  # a relayed reply keeps the upstream's Server, gains none
        "ws_max_size": settings.max_body_size,
        "timeout_graceful_shutdown": 10,
        # Keep idle client connections well past the few seconds clients keep theirs, so a
        # client never reuses a connection the server is closing.
        "timeout_keep_alive": 75,
        "ws": RefusalAwareWebSocketProtocol,
        **uvicorn_options(header_timeout=settings.header_timeout, max_connections=settings.max_connections),
    }


def banner(loaded: LoadedConfig) -> dict[str, str]:
    """What ``serve`` says when it starts, field by field."""
    settings = loaded.settings
    return {
        "listening": settings.bind_description,
        "config": str(loaded.path) if loaded.path else "none (defaults and environment)",
        "amp_upstream": settings.amp_upstream_url or "disabled",
        "local_providers": ", ".join(p.name for p in settings.providers) or "none",
        "amp_url": local_url(settings),
    }


def _print_banner(fields: dict[str, str], log_format: str) -> None:
    if log_format == "json":
        logger.info("ampbridge listening on %s", fields["listening"], extra=fields)
        return
    print(f"ampbridge listening on {fields['listening']}")
    print(f"  config: {fields['config']}")
    print(f"  Amp upstream: {fields['amp_upstream']}")
    print(f"  local providers: {fields['local_providers']}")
    print(f"  point Amp at it: amp.url = {fields['amp_url']}  (or run: ampbridge setup)", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ..standalone import create_app

    overrides = {name: value for name in ("host", "port") if (value := getattr(args, name)) is not None}
    loaded = load_config(args.config, os.environ, **overrides)
    settings = loaded.settings
    # An explicit --log-level wins over the config's `debug: true`.
    level = args.log_level or ("debug" if settings.debug else "info")
    configure_logging(level=level, to_file=settings.logging_to_file, log_format=args.log_format)
    # No line shows the caller's file, thread or process: skip collecting them for every record
    # (the documented switches; process-wide, which the server process is ours to decide).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    _print_banner(banner(loaded), args.log_format)
    for warning in startup_warnings(settings):
        warn_once(warning)
    app = create_app(args.config, overrides=overrides, configure_logs=False)
    # What is loaded by now lives as long as the server: moved out of the collector's way, so its
    # full passes under load (10 ms and more each) walk only what requests create.
    gc.collect()
    gc.freeze()
    # The young generation is collected after 10,000 more tracked objects, not 700: the objects
    # of 64 requests in flight passed 700 every ten requests or so, and those passes cost about
    # 12 µs per request at that load. Requests free nearly everything they make themselves.
    gc.set_threshold(10_000, *gc.get_threshold()[1:])
    reuse_heap_for_bodies()
    uvicorn.run(
        app,
        host=settings.bind_host,
        port=settings.port,
        log_level=level,
        log_config=None,  # keep the handlers configure_logging installed
        **server_options(settings),
    )
    return 0
