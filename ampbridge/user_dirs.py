"""Where ampbridge (and Amp) keep per-user files, read from an environment mapping.

platformdirs reads ``XDG_CONFIG_HOME`` / ``XDG_DATA_HOME`` from the process environment; the app
takes its environment as a mapping (``load_settings(environ=...)``), so those two are looked up in
that mapping first.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import platformdirs


def user_config_dir(app: str, environ: Mapping[str, str]) -> Path:
    if sys.platform not in ("darwin", "win32") and environ.get("XDG_CONFIG_HOME"):
        return Path(environ["XDG_CONFIG_HOME"]) / app
    return platformdirs.user_config_path(app)


def user_data_dir(app: str, environ: Mapping[str, str]) -> Path:
    if sys.platform not in ("darwin", "win32") and environ.get("XDG_DATA_HOME"):
        return Path(environ["XDG_DATA_HOME"]) / app
    return platformdirs.user_data_path(app)
