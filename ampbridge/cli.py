"""The ``ampbridge`` command: ``serve``, ``check`` and ``setup``."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from .backends import LocalBackends
from .http_client import SharedClient
from .settings import ConfigError, Settings, find_config_file, load_settings

AMP_SETTINGS_ENV = "AMP_SETTINGS_FILE"


def amp_settings_path() -> Path:
    """Amp's settings file: ``AMP_SETTINGS_FILE``, else ``~/.config/amp/settings.json``."""
    explicit = os.environ.get(AMP_SETTINGS_ENV)
    return Path(explicit).expanduser() if explicit else Path.home() / ".config" / "amp" / "settings.json"


def local_url(settings: Settings) -> str:
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    return {
        k: v
        for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None)))
        if v is not None
    }


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .standalone import create_app

    settings = load_settings(args.config, **_overrides(args))
    config_file = find_config_file(args.config, os.environ)
    print(f"ampbridge listening on {local_url(settings)}")
    print(f"  config: {config_file or 'none (defaults and environment)'}")
    print(f"  Amp upstream: {settings.amp_upstream_url or 'disabled'}")
    print(f"  local providers: {', '.join(p.name for p in settings.providers) or 'none'}")
    print(f"  point Amp at it: amp.url = {local_url(settings)}  (or run: ampbridge setup)")
    sys.stdout.flush()
    uvicorn.run(
        create_app(args.config, overrides=_overrides(args)),
        host=settings.host,
        port=settings.port,
        log_level="debug" if settings.debug else "info",
        **server_options(settings),
    )
    return 0


def server_options(settings: Settings) -> dict[str, Any]:
    """How ``ampbridge serve`` runs uvicorn (the tests run ampbridge the same way)."""
    return {
        "proxy_headers": False,  # the localhost gate must see the real TCP peer
        "server_header": False,  # a relayed reply keeps the upstream's Server, gains none
        "ws_max_size": settings.max_body_size,
        "timeout_graceful_shutdown": 10,
        # Keep idle client connections well past the few seconds clients keep theirs, so a
        # client never reuses a connection the server is closing.
        "timeout_keep_alive": 75,
    }


def cmd_check(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    config_file = find_config_file(args.config, os.environ)
    print(f"config: {config_file or 'none (defaults and environment)'} - valid")
    print(f"Amp upstream: {settings.amp_upstream_url or 'disabled (model calls that are not local fail)'}")
    gate = "localhost only" if settings.amp_restrict_management_to_localhost else "open to any peer"
    print(f"management routes: {gate}; client keys: {len(settings.api_keys) or 'not required'}")
    backends = anyio.run(_discovered_backends, settings)
    print("served locally:")
    if not backends.backends:
        print("  nothing (no providers)")
    for backend in backends.backends:
        if backend.configured is not None:
            models = ", ".join(backend.config.models or []) or "none"
        elif backend.discovered is not None:
            models = ", ".join(backend.listed) or "none"
        else:
            models = "unknown (could not list its models)"
        print(f"  {backend.name} [{backend.wire_format.value}] {backend.config.base_url}: {models}")
    for mapping in settings.amp_model_mappings:
        kind = "regex" if mapping.regex else "name"
        served = any(backends.serves(mapping.target, backend.wire_format) for backend in backends.backends)
        note = "" if served else "  (target not served locally: skipped)"
        print(f"  mapped {kind} {mapping.source!r} -> {mapping.target!r}{note}")
    if settings.amp_upstream_url:
        print(f"everything else: forwarded to {settings.amp_upstream_url} (uses Amp credits)")
    else:
        print("everything else: refused with 502 (no upstream)")
    return 0


async def _discovered_backends(settings: Settings) -> LocalBackends:
    client = SharedClient(environ=os.environ)
    backends = LocalBackends(settings.providers, client=client, max_body_size=settings.max_body_size)
    async with client:
        with anyio.move_on_after(10):
            await backends.discover_all()
    return backends


def cmd_setup(args: argparse.Namespace) -> int:
    url = args.url or local_url(load_settings(args.config))
    path = Path(args.settings_file).expanduser() if args.settings_file else amp_settings_path()
    current: dict[str, object] = {}
    if path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8") or "{}")
        except ValueError as error:
            print(f"{path}: not valid JSON ({error}); left unchanged", file=sys.stderr)
            return 1
        if not isinstance(loaded, dict):
            print(f"{path}: not a JSON object; left unchanged", file=sys.stderr)
            return 1
        current = loaded
        backup = path.with_name(f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}.bak")
        shutil.copy2(path, backup)
        print(f"backed up {path} to {backup}")
    if current.get("amp.url") == url:
        print(f"{path}: amp.url is already {url}")
        return 0
    current["amp.url"] = url
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(current, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    print(f"{path}: amp.url = {url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ampbridge", description="Run Amp through your own model access.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="bind port (default from config: 8317)")
    serve.set_defaults(run=cmd_serve)
    check = commands.add_parser("check", help="validate the config and show what is served where")
    check.set_defaults(run=cmd_check)
    setup = commands.add_parser("setup", help="point Amp at this server (writes amp.url)")
    setup.add_argument("--url", help="the URL to write (default: from the config's host and port)")
    setup.add_argument(
        "--settings-file",
        help=f"Amp's settings file (default: ${AMP_SETTINGS_ENV} or ~/.config/amp/settings.json)",
    )
    setup.set_defaults(run=cmd_setup)
    for command in (serve, check, setup):
        command.add_argument(
            "--config", help="config file (default: $AMPBRIDGE_CONFIG, ./config.yaml, user config dir)"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"ampbridge: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
