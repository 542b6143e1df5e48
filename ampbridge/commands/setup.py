"""``ampbridge setup``: point Amp at ampbridge, and say what that gives each installed Amp CLI.

By default ``amp.url`` is set in Amp's settings file (``amp_settings.point_amp_at``: comments
kept, a backup only when the file changes, through symlinks, mode kept). ``--cli PATH_OR_NAME``
instead writes a small wrapper that runs just that installation with ``AMP_URL`` set, so other Amp
installations keep talking to Amp directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..amp_cli import AmpCli, CliKind, SearchRoots, describe_clis, find_amp_clis
from ..amp_settings import (
    SettingsFileError,
    default_wrapper_path,
    point_amp_at,
    resolve_cli,
    write_cli_wrapper,
)
from .common import load_config, local_url

AMP_SETTINGS_ENV = "AMP_SETTINGS_FILE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the URL to write (default: from the config's host and port)")
    parser.add_argument(
        "--settings-file",
        help=f"Amp's settings file (default: ${AMP_SETTINGS_ENV} or ~/.config/amp/settings.json)",
    )
    parser.add_argument(
        "--cli",
        metavar="PATH_OR_NAME",
        help="point only this Amp installation at ampbridge, with a wrapper script "
        "(Amp's settings file is left alone)",
    )
    parser.add_argument(
        "--wrapper", help="where --cli writes the wrapper (default: ~/.local/bin/amp-via-ampbridge)"
    )
    parser.set_defaults(run=cmd_setup)


def amp_settings_path(environ: Mapping[str, str], home: Path) -> Path:
    """Amp's settings file: ``AMP_SETTINGS_FILE``, else ``~/.config/amp/settings.json``."""
    explicit = environ.get(AMP_SETTINGS_ENV)
    return Path(explicit).expanduser() if explicit else home / ".config" / "amp" / "settings.json"


def installation_of(executable: Path, clis: Sequence[AmpCli]) -> AmpCli | None:
    """The detected installation ``executable`` runs (a native binary, or a file in a JS package)."""
    real = executable.resolve()
    for cli in clis:
        if real == cli.path or (cli.kind is CliKind.JS and cli.path in real.parents):
            return cli
    return None


def cmd_setup(args: argparse.Namespace) -> int:
    url = args.url or local_url(load_config(args.config, os.environ).settings)
    home = Path.home()
    roots = SearchRoots.from_environment(os.environ, home)
    clis = find_amp_clis(roots)
    try:
        if args.cli:
            lines = _wrap_one(args, url, roots, clis, home)
        else:
            path = Path(args.settings_file).expanduser() if args.settings_file else None
            result = point_amp_at(url, path or amp_settings_path(os.environ, home))
            lines = [*result.lines(), "", "what this gives the Amp CLIs on this machine:"]
            lines += [f"  {line}" for line in describe_clis(clis)]
    except SettingsFileError as error:
        print(f"ampbridge setup: {error}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def _wrap_one(
    args: argparse.Namespace, url: str, roots: SearchRoots, clis: Sequence[AmpCli], home: Path
) -> list[str]:
    executable = resolve_cli(args.cli, [*roots.path_dirs, *roots.binary_dirs])
    wrapper = Path(args.wrapper).expanduser() if args.wrapper else default_wrapper_path(home)
    lines = write_cli_wrapper(executable, url, wrapper).lines()
    if wrapper.parent.resolve() not in {d.resolve() for d in roots.path_dirs}:
        lines.append(f"note: {wrapper.parent} is not on your PATH; run the wrapper by its full path")
    installation = installation_of(executable, clis)
    if installation is None:
        lines.append(f"note: {executable} is not an Amp installation ampbridge recognises")
    else:
        lines += ["", "what this gives that installation:"]
        lines += [f"  {line}" for line in describe_clis([installation])]
    return lines
