"""The ready server: ``uvicorn ampbridge.standalone:app`` or ``ampbridge serve``.

Only composition: ``ampbridge.app()``'s bridge serving every route of SPEC §4 at the root, its
settings read from the config file and the environment when it starts, and the file watched for
changes. ``create_app`` makes another one (tests, other entry points).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .application import AmpApp
from .application import app as amp_app
from .http_client import SharedClient
from .settings import Settings


def create_app(
    config_path: str | os.PathLike[str] | None = None,
    *,
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    watch_config: bool = True,
    configure_logs: bool = True,
    client: SharedClient | None = None,
) -> AmpApp:
    return amp_app(
        settings=settings,
        config=config_path,
        environ=environ,
        client=client,
        watch_config=watch_config,
        configure_logs=configure_logs,
        standalone=True,
        **dict(overrides or {}),
    ).root


app = create_app()
