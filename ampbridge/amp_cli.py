"""Which Amp CLIs are installed, and what ampbridge can do for each.

Two kinds exist. The JS build (npm package ``@sourcegraph/amp``; 0.0.1777897475 and older) calls
models itself through ``$AMP_URL/api/provider/*``, so ampbridge can serve those calls locally.
Native CLIs (a single binary, 0.0.1790142911 and newer) run their agent in Amp's cloud: their
model calls never reach ampbridge, which only relays their control-plane and ``/actors`` traffic.
For those, Amp's own "custom URL" model router is the way to use one's own models
(``custom_router_command``).

The same files also hold Amp's public actor routing token (``rvt-token``). It is looked for in the
installed CLI's files, never logged, never written anywhere; ``actors.RoutingTokenSource`` asks
for it once and keeps it in memory. Nothing here runs at import; every search root is passed in.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import unquote

logger = logging.getLogger("ampbridge.amp_cli")

NPM_PACKAGE = ("@sourcegraph", "amp")
# The last JS build known to call /api/provider/* itself, and the first build known to run its
# agent in Amp's cloud (both observed with the real CLIs). Builds in between are not known.
LAST_LOCAL_MODEL_BUILD = 1777897475
FIRST_CLOUD_AGENT_BUILD = 1790142911
VERSION_TIMEOUT_SECONDS = 3.0

# Amp's versions are 0.0.<build>[-g<commit>]; in a binary, only the commit-suffixed form is
# specific enough to be Amp's own (a binary embeds many other version strings).
_VERSION = re.compile(r"\b\d+\.\d+\.\d+(?:-[0-9A-Za-z.]+)?\b")
_EMBEDDED_VERSION = re.compile(rb"\b0\.0\.(\d{9,})-g[0-9a-f]{6,}\b")
# The routing token, as found in the CLI's files. Two spellings are looked for:
#  1. Rivet's URL-auth endpoint for Amp's actor gateway, ``https://<namespace>:<token>@actors.ampcode.com``
#     (the host must end there: ``actors.ampcode.com.evil.example`` does not count);
#  2. a literal ``rvt-token=<token>`` in a URL.
# A token is 8-256 URL-safe characters (percent-escapes decoded).
_TOKEN_CHARS = rb"[A-Za-z0-9_.~%-]{8,256}"
ROUTING_TOKEN_PATTERNS = (
    re.compile(rb"https://[A-Za-z0-9_-]+:(" + _TOKEN_CHARS + rb")@actors\.ampcode\.com(?![A-Za-z0-9.-])"),
    re.compile(rb"[?&]rvt-token=(" + _TOKEN_CHARS + rb")"),
)
_SCAN_CHUNK = 4 * 1024 * 1024
_SCAN_OVERLAP = 512
_SCAN_LIMIT = 512 * 1024 * 1024


class CliKind(Enum):
    NATIVE = "native"
    JS = "js"


class ModelCalls(Enum):
    LOCAL = "local"  # the CLI calls /api/provider/*: ampbridge can serve them
    CLOUD = "cloud"  # the agent runs in Amp's cloud: relay only
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class AmpCli:
    kind: CliKind
    path: Path  # the native executable, or the JS build's package directory
    version: str | None

    @property
    def build(self) -> int | None:
        match = re.match(r"\d+\.\d+\.(\d+)", self.version or "")
        return int(match.group(1)) if match else None

    @property
    def model_calls(self) -> ModelCalls:
        if self.kind is CliKind.NATIVE:
            return ModelCalls.CLOUD
        build = self.build
        if build is None:
            return ModelCalls.UNKNOWN
        if build <= LAST_LOCAL_MODEL_BUILD:
            return ModelCalls.LOCAL
        return ModelCalls.CLOUD if build >= FIRST_CLOUD_AGENT_BUILD else ModelCalls.UNKNOWN


@dataclass(frozen=True)
class SearchRoots:
    """Where to look: the ``PATH`` directories, the extra binary folders, the npm global roots."""

    path_dirs: Sequence[Path]
    binary_dirs: Sequence[Path]
    npm_roots: Sequence[Path]

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], home: Path) -> SearchRoots:
        """The usual places, from an environment mapping and a home directory (no npm is run)."""
        path_dirs = [Path(p) for p in environ.get("PATH", "").split(os.pathsep) if p]
        binary_dirs = [home / ".amp" / "bin", home / ".local" / "bin"]
        npm_roots = [Path(prefix) / "lib" / "node_modules" for prefix in _npm_prefixes(environ)]
        npm_roots += [
            home / ".npm-global" / "lib" / "node_modules",
            Path("/usr/local/lib/node_modules"),
            Path("/usr/lib/node_modules"),
            Path("/opt/homebrew/lib/node_modules"),
            home / ".bun" / "install" / "global" / "node_modules",
        ]
        nvm_dir = Path(environ.get("NVM_DIR") or home / ".nvm")
        npm_roots += sorted((nvm_dir / "versions" / "node").glob("*/lib/node_modules"))
        return cls(path_dirs, binary_dirs, list(dict.fromkeys(npm_roots)))


def _npm_prefixes(environ: Mapping[str, str]) -> list[str]:
    return [value for name, value in environ.items() if name.lower() == "npm_config_prefix" and value]


def _package_json(directory: Path) -> dict[str, object] | None:
    try:
        data = json.loads((directory / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _amp_package_above(path: Path) -> Path | None:
    """The ``@sourcegraph/amp`` package directory that holds ``path``, if any."""
    for directory in path.parents:
        data = _package_json(directory)
        if data is not None:
            return directory if data.get("name") == "/".join(NPM_PACKAGE) else None
    return None


def _js_cli(package: Path) -> AmpCli:
    data = _package_json(package) or {}
    version = data.get("version")
    return AmpCli(CliKind.JS, package, version if isinstance(version, str) else None)


def _is_node_script(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            first_line = file.readline(256)
    except OSError:
        return False
    return first_line.startswith(b"#!") and b"node" in first_line


def embedded_version(path: Path) -> str | None:
    """An Amp version string (``0.0.<build>-g<commit>``) inside a binary, the newest one found."""
    found = [m for chunk in _chunks(path) for m in _EMBEDDED_VERSION.finditer(chunk)]
    if not found:
        return None
    return max(found, key=lambda m: int(m.group(1))).group(0).decode("ascii")


def native_version(path: Path, *, timeout: float = VERSION_TIMEOUT_SECONDS) -> str | None:
    """``<path> --version`` (with a short timeout), else the version string embedded in it."""
    try:
        completed = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        completed = None
    if completed is not None and completed.returncode == 0:
        match = _VERSION.search(completed.stdout)
        if match:
            return match.group(0)
    return embedded_version(path)


def find_amp_clis(
    roots: SearchRoots, *, version_of: Callable[[Path], str | None] = native_version
) -> list[AmpCli]:
    """Every installed Amp CLI, once each: ``amp`` executables on ``PATH`` and in the binary
    folders (a node script there is the JS build it belongs to), then npm global packages."""
    found: dict[Path, AmpCli] = {}
    for directory in [*roots.path_dirs, *roots.binary_dirs]:
        candidate = directory / "amp"
        if not candidate.is_file() or not os.access(candidate, os.X_OK):
            continue
        real = candidate.resolve()
        package = _amp_package_above(real)
        if package is not None:
            found.setdefault(package.resolve(), _js_cli(package))
        elif not _is_node_script(real) and real not in found:
            found[real] = AmpCli(CliKind.NATIVE, real, version_of(real))
    for root in roots.npm_roots:
        package = root.joinpath(*NPM_PACKAGE)
        if (package / "package.json").is_file():
            found.setdefault(package.resolve(), _js_cli(package))
    return list(found.values())


def _chunks(path: Path) -> Iterator[bytes]:
    """A file's bytes in overlapping chunks (so a match across a boundary is still seen)."""
    try:
        with path.open("rb") as file:
            tail = b""
            read = 0
            while read < _SCAN_LIMIT and (block := file.read(_SCAN_CHUNK)):
                read += len(block)
                yield tail + block
                tail = block[-_SCAN_OVERLAP:]
    except OSError:
        return


def _files_of(cli: AmpCli) -> Iterator[Path]:
    if cli.kind is CliKind.NATIVE:
        yield cli.path
        return
    for directory, _, names in os.walk(cli.path):
        for name in sorted(names):
            yield Path(directory) / name


def routing_token_in(path: Path) -> str | None:
    """The routing token written in one file (see ``ROUTING_TOKEN_PATTERNS``), if any."""
    for chunk in _chunks(path):
        for pattern in ROUTING_TOKEN_PATTERNS:
            match = pattern.search(chunk)
            if match:
                return unquote(match.group(1).decode("ascii"))
    return None


def installed_routing_token(clis: Sequence[AmpCli]) -> str | None:
    """The routing token from the installed CLIs, native ones first. Never logged."""
    ordered = sorted(clis, key=lambda cli: cli.kind is not CliKind.NATIVE)
    for cli in ordered:
        for path in _files_of(cli):
            token = routing_token_in(path)
            if token is not None:
                logger.info("Amp actor routing token found in the installed Amp CLI (%s)", cli.path)
                return token
    return None


def describe_clis(clis: Sequence[AmpCli]) -> list[str]:
    """What ``ampbridge check`` and ``ampbridge setup`` print about each installed CLI."""
    if not clis:
        return [
            "No Amp CLI found on PATH, in ~/.amp/bin, ~/.local/bin or the npm global folders.",
        ]
    lines = []
    for cli in clis:
        name = "native Amp CLI" if cli.kind is CliKind.NATIVE else "Amp CLI, JS build (@sourcegraph/amp)"
        lines.append(f"{name} {cli.version or '(version unknown)'} at {cli.path}:")
        calls = cli.model_calls
        if calls is ModelCalls.LOCAL:
            lines.append(
                "  model calls (/api/provider/*) go through ampbridge: models your providers or "
                "mappings serve are served locally, the rest use Amp credits."
            )
        elif calls is ModelCalls.CLOUD:
            lines.append(
                "  runs its agent in Amp's cloud: its model calls never reach ampbridge and cannot be "
                "served locally. ampbridge relays login, threads and the actor WebSocket only."
            )
            lines.append(
                "  to use your own models with it, use Amp's custom-URL model router "
                "(`ampbridge check` prints the `amp config model-providers add-router` command)."
            )
        else:
            lines.append(
                f"  a build between {LAST_LOCAL_MODEL_BUILD} and {FIRST_CLOUD_AGENT_BUILD}: not known "
                "whether it calls /api/provider/*; ampbridge serves what reaches it and relays the rest."
            )
    return lines


API_FORMATS = ("chat-completions", "responses", "anthropic-messages")


def custom_router_command(base_url: str, api_format: str, models: Sequence[str], key_file: str) -> str:
    """The ``amp config model-providers add-router custom-url`` command that makes Amp's cloud
    call ``base_url`` (ampbridge's plain ``/v1`` routes behind the user's tunnel) for ``models``,
    with the client key read from ``key_file``. Each argument is shell-quoted; one
    ``--model-mapping`` per model."""
    if api_format not in API_FORMATS:
        raise ValueError(f"api_format must be one of {', '.join(API_FORMATS)}, not {api_format!r}")
    if not base_url.startswith("https://"):
        raise ValueError("Amp's cloud calls the router over the internet: base_url must be https://")
    parts = [
        "amp config model-providers add-router custom-url",
        f"--base-url {shlex.quote(base_url)}",
        f"--api-format {api_format}",
        f"--api-key-file {shlex.quote(key_file)}",
        *(f"--model-mapping {shlex.quote(model)}" for model in models),
    ]
    return " \\\n    ".join(parts)
