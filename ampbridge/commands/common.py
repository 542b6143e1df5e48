"""What the ``ampbridge`` commands share: the settings read once, the URL Amp is pointed at, and
the Amp CLIs installed on this machine.

The commands read the config file without ``load_settings``'s "ignoring keys" warning: ``serve``
lets the app log it once when it starts, and ``check`` prints the keys itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..amp_cli import AmpCli, SearchRoots, find_amp_clis
from ..settings import ConfigDocument, Settings, find_config_file, read_config_file, settings_from

ALL_INTERFACES = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class LoadedConfig:
    settings: Settings
    path: Path | None  # the config file read, if any
    unknown_keys: tuple[str, ...]  # top-level keys ampbridge does not use


def load_config(
    config: str | os.PathLike[str] | None, environ: Mapping[str, str], **overrides: Any
) -> LoadedConfig:
    """The settings ``serve`` would use (raises ConfigError), without logging anything."""
    path = find_config_file(config, environ)
    document = read_config_file(path) if path else ConfigDocument()
    return LoadedConfig(settings_from(document, environ=environ, **overrides), path, document.unknown_keys)


def local_url(settings: Settings) -> str:
    """The URL Amp on this machine should use (``localhost`` when every interface is bound)."""
    host = settings.bind_host
    if host in ALL_INTERFACES:
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def installed_clis(environ: Mapping[str, str], home: Path) -> list[AmpCli]:
    """The Amp CLIs installed on this machine (runs each native one's ``--version``)."""
    return find_amp_clis(SearchRoots.from_environment(environ, home))
