"""``ampbridge check [CONFIG] [--probe]``: is the config valid, where does the Amp key come from,
which Amp CLIs are installed and what each gets, and where each model is served.

Without ``--probe`` nothing leaves the machine. With it, the upstream and every backend are asked
once (``commands.probe``), and backends configured without ``models`` show what they list. The
Amp key and provider keys are never printed: only where the Amp key comes from.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

import anyio

from ..amp_cli import AmpCli, ModelCalls, custom_router_command, describe_clis
from ..backend import Backend
from ..backends import AnyBackend, LocalBackends
from ..builder import upstream_key_resolver
from ..http_client import SharedClient
from ..model_table import describe_lines
from ..models import WireFormat, split_thinking_suffix
from ..secrets import UpstreamKeyResolver
from ..settings import ConfigError, Settings
from .common import LoadedConfig, installed_clis, load_config, local_url
from .probe import probe_all

# The api-format of Amp's custom-URL model router for each wire format ampbridge serves on its
# plain routes, and the base URL suffix each format's official SDK expects.
ROUTER_FORMATS = {
    WireFormat.ANTHROPIC: ("anthropic-messages", ""),
    WireFormat.OPENAI: ("chat-completions", "/v1"),
}
TUNNEL_PLACEHOLDER = "YOUR-TUNNEL-HOST"
CLIENT_KEY_FILE = "ampbridge-client-key.txt"
MAX_LISTED_MODELS = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config_file", nargs="?", metavar="CONFIG", help="config file (same as --config)")
    parser.add_argument(
        "--probe", action="store_true", help="also ask the Amp upstream and each backend whether they answer"
    )
    parser.set_defaults(run=cmd_check)


def _config_argument(args: argparse.Namespace) -> str | None:
    if args.config_file and args.config and args.config_file != args.config:
        raise ConfigError(f"two config files given ({args.config_file} and --config {args.config}); pass one")
    return args.config_file or args.config  # type: ignore[no-any-return]


def cmd_check(args: argparse.Namespace) -> int:
    loaded = load_config(_config_argument(args), os.environ)
    settings = loaded.settings
    resolver = upstream_key_resolver(settings, os.environ)
    shared = SharedClient(environ=os.environ)
    backends = LocalBackends(
        settings.providers, client=shared, max_body_size=settings.max_body_size, proxy_url=settings.proxy_url
    )
    probe_lines: list[str] = []
    healthy = True
    if args.probe:
        healthy, probe_lines = anyio.run(_probe, settings, resolver, shared, backends)
    clis = installed_clis(os.environ, Path.home())
    for line in [
        *config_lines(loaded, resolver),
        "",
        *cli_lines(clis),
        "",
        *placement_lines(settings, backends),
        *router_lines(settings, backends, clis),
        *probe_lines,
    ]:
        print(line)
    return 0 if healthy else 1


def config_lines(loaded: LoadedConfig, resolver: UpstreamKeyResolver) -> list[str]:
    """The config file, the upstream, where the Amp key comes from, the gates, amp-fallback."""
    settings = loaded.settings
    lines = [f"config: {loaded.path or 'none (defaults and environment)'} - valid"]
    if loaded.unknown_keys:
        lines.append(f"  not used (ampbridge has no such setting): {', '.join(loaded.unknown_keys)}")
    if not settings.amp_upstream_url:
        lines.append("Amp upstream: disabled (model calls that are not served locally fail)")
    else:
        lines.append(f"Amp upstream: {settings.amp_upstream_url}")
        source = resolver.source()
        if source is not None:
            lines.append(f"Amp key: from {source}")
        else:
            lines += [
                "Amp key: none found. Run `amp login` with AMP_URL pointing here:",
                f"    AMP_URL={local_url(settings)} amp login",
                "  (or set AMP_API_KEY, or amp-upstream-api-key in the config)",
            ]
        if settings.amp_upstream_api_keys:
            mapped = sum(len(mapping.api_keys) for mapping in settings.amp_upstream_api_keys)
            lines.append(f"  per-client Amp keys: {mapped} client keys mapped (amp-upstream-api-keys)")
    keys = len(settings.api_keys)
    lines.append(f"client keys (api-keys): {keys if keys else 'not required'}")
    gate = "localhost only" if settings.amp_restrict_management_to_localhost else "open to any peer"
    lines.append(f"management routes: {gate}")
    if settings.amp_fallback == "never":
        lines.append("amp-fallback: never (a model call nothing here serves is refused: no Amp credits used)")
    else:
        lines.append("amp-fallback: allowed (a model call nothing here serves goes to Amp, on Amp credits)")
    return lines


def cli_lines(clis: Sequence[AmpCli]) -> list[str]:
    return ["Amp CLIs on this machine:", *(f"  {line}" for line in describe_clis(clis))]


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED_MODELS])
    more = len(names) - MAX_LISTED_MODELS
    return shown + (f" and {more} more" if more > 0 else "")


def placement_lines(settings: Settings, backends: LocalBackends) -> list[str]:
    """Each model: which backend serves it, in which wire format, under which name (calls in
    another format are translated); then the mappings, then where everything else goes."""
    lines = ["served locally (the first backend that serves a model wins; other formats are translated):"]
    lines += describe_lines(settings) or ["  nothing (no providers)"]
    for backend in backends.backends:
        if backend.needs_discovery and backend.discovered is not None:
            names = ", ".join(backend.listed) or "none"
            lines.append(f"  {backend.name} lists: {names}")
    for mapping in settings.amp_model_mappings:
        kind = "regex" if mapping.regex else "name"
        target = _serving(backends, mapping.target)
        where = "target not served locally: skipped"
        if target is not None:
            where = f"{target.name} [{target.wire_format.value}]"
        lines.append(f"  mapped {kind} {mapping.source!r} -> {mapping.target!r}: {where}")
    upstream = settings.amp_upstream_url
    if not upstream:
        lines.append("everything else: refused with 502 (no upstream)")
    elif settings.amp_fallback == "never":
        lines.append("other model calls: refused (amp-fallback: never)")
        lines.append(f"everything else (login, threads, actors): relayed to {upstream}")
    else:
        lines.append(f"everything else: forwarded to {upstream} (model calls there use Amp credits)")
    return lines


def _serving(backends: LocalBackends, model: str) -> AnyBackend | None:
    base = split_thinking_suffix(model)[0]
    return next((backend for backend in backends.backends if backend.serves(base)), None)


def tunnel_host(allowed_hosts: Sequence[str]) -> str | None:
    """The first exact, public-looking name in ``allowed-hosts``: the user's tunnel hostname."""
    for entry in allowed_hosts:
        name = entry.strip().lower()
        if not name or "*" in name or name == "localhost" or name.endswith(".localhost"):
            continue
        try:
            ipaddress.ip_address(name.strip("[]"))
        except ValueError:
            return name
    return None


def router_lines(settings: Settings, backends: LocalBackends, clis: Sequence[AmpCli]) -> list[str]:
    """For a native (cloud-agent) CLI: the ``amp config model-providers add-router custom-url``
    commands that send Amp's cloud to ampbridge's plain ``/v1`` routes through a tunnel."""
    if not any(cli.model_calls is ModelCalls.CLOUD for cli in clis):
        return []
    host = tunnel_host(settings.allowed_hosts)
    lines = [
        "",
        "your own models with a native Amp CLI: Amp's custom-URL model router, pointed at ampbridge's",
        "plain /v1 routes through a tunnel you run (Amp's cloud makes the model calls):",
    ]
    if host is None:
        lines.append(
            f"  - expose {local_url(settings)} through a tunnel and add its hostname to allowed-hosts"
        )
    if not settings.api_keys:
        lines.append("  - set api-keys first: the router reaches ampbridge from the internet")
    commands = []
    for wire_format, (api_format, suffix) in ROUTER_FORMATS.items():
        models = [name for name, backend in backends.model_names(wire_format)]
        if models:
            base_url = f"https://{host or TUNNEL_PLACEHOLDER}{suffix}"
            commands.append(custom_router_command(base_url, api_format, models, CLIENT_KEY_FILE))
    if not commands:
        lines.append("  - no local models with a known name to route (Anthropic or OpenAI providers)")
        return lines
    lines.append(f"  - put one of your api-keys in {CLIENT_KEY_FILE}, then run:")
    lines += [f"    {line}" for command in commands for line in command.splitlines()]
    return lines


async def _probe(
    settings: Settings, resolver: UpstreamKeyResolver, shared: SharedClient, backends: LocalBackends
) -> tuple[bool, list[str]]:
    """Probe the upstream and a copy of each backend (a configured model list stays as
    configured); a backend that lists its models at start gets the list found."""
    probed = [b for b in backends.backends if isinstance(b, Backend)]  # logins are not probed
    copies = [Backend(b.config, default_proxy_url=settings.proxy_url) for b in probed]
    upstream, results = await probe_all(
        shared, settings.amp_upstream_url, settings.proxy_url, resolver.resolve(), copies
    )
    lines = ["", "probe:"]
    if upstream is not None:
        lines.append(f"  Amp upstream {settings.amp_upstream_url}: {upstream.detail}")
    for backend, copy, result in zip(probed, copies, results, strict=True):
        if backend.needs_discovery and result.ok:
            backend.listed, backend.discovered = copy.listed, copy.discovered
        lines.append(f"  backend {backend.name} {backend.config.base_url}: {result.detail}")
        if result.models:
            lines.append(f"    models: {_listing(result.models)}")
    healthy = all(r.ok for r in [*results, *([upstream] if upstream else [])])
    return healthy, lines
