"""The ``ampbridge`` command: ``serve``, ``check``, ``setup``, ``usage``, and the subscription
logins (``login``, ``logout``, ``accounts``). Bare ``ampbridge`` prints this help."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import platformdirs

from . import __version__, usage_report
from .chatgpt import commands as chatgpt_commands
from .commands import check, serve, setup
from .commands.serve import server_options
from .settings import ConfigError

__all__ = ["build_parser", "main", "server_options"]

CONFIG_HELP = "config file (default: $AMPBRIDGE_CONFIG, ./config.yaml, user config dir)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ampbridge", description="Run Amp through your own model access.")
    parser.add_argument("--version", action="version", version=f"ampbridge {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module, summary in (
        ("serve", serve, "run the server"),
        ("check", check, "check the config; show the Amp key source, Amp CLIs and where models are served"),
        ("setup", setup, "point Amp at this server (amp.url, or a wrapper for one installation)"),
    ):
        command = commands.add_parser(name, help=summary, description=summary)
        module.add_arguments(command)
        command.add_argument("--config", help=CONFIG_HELP)
    usage_report.register(commands)
    chatgpt_commands.register(commands, data_dir_default=platformdirs.user_data_path("ampbridge") / "chatgpt")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args))
    except ConfigError as error:
        print(f"ampbridge: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
