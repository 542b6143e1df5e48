"""The Codex CLI's own login file, ``$CODEX_HOME/auth.json`` (default ``~/.codex/auth.json``).

An imported login stays in that file: refresh tokens are single-use, so a copy would break the
Codex CLI (or ampbridge) at the next refresh. ampbridge reads the tokens from the file each time it
needs them and, after it refreshes, writes the new ones back in the CLI's layout (``tokens.*``,
``last_refresh``), keeping every other field and mode 0600.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .credentials import Tokens, from_rfc3339, to_rfc3339
from .files import read_json_object, write_private_json


class CodexFileError(Exception):
    """The Codex CLI's file is missing, unreadable, or holds no ChatGPT login."""


def default_codex_auth_path(environ: Mapping[str, str], home: Path) -> Path:
    """``$CODEX_HOME/auth.json``, else ``~/.codex/auth.json``."""
    codex_home = environ.get("CODEX_HOME")
    return (Path(codex_home).expanduser() if codex_home else home / ".codex") / "auth.json"


def read_codex_tokens(path: Path) -> Tokens:
    try:
        data = read_json_object(path)
    except FileNotFoundError:
        raise CodexFileError(f"{path}: no such file (log in with `codex login` first)") from None
    except (OSError, ValueError) as error:
        raise CodexFileError(f"{path}: cannot read it ({type(error).__name__})") from None
    tokens = data.get("tokens")
    if not isinstance(tokens, dict) or not all(
        isinstance(tokens.get(key), str) and tokens[key]
        for key in ("id_token", "access_token", "refresh_token")
    ):
        kind = "an API-key login" if data.get("OPENAI_API_KEY") else "no ChatGPT login"
        raise CodexFileError(f"{path}: holds {kind}; log in to the Codex CLI with ChatGPT first")
    return Tokens(
        id_token=tokens["id_token"],
        access_token=tokens["access_token"],
        refresh_token=tokens["refresh_token"],
        last_refresh=from_rfc3339(data.get("last_refresh")),
    )


def write_codex_tokens(path: Path, tokens: Tokens, *, now: float | None = None) -> None:
    """Put refreshed tokens back into the CLI's file, keeping its other fields (call under the
    file's lock, see ``files.file_lock``)."""
    try:
        data: dict[str, Any] = read_json_object(path)
    except FileNotFoundError:
        data = {}
    except (OSError, ValueError) as error:
        raise CodexFileError(f"{path}: cannot read it ({type(error).__name__})") from None
    previous = data.get("tokens")
    section: dict[str, Any] = dict(previous) if isinstance(previous, dict) else {}
    section.update(
        id_token=tokens.id_token, access_token=tokens.access_token, refresh_token=tokens.refresh_token
    )
    account_id = tokens.identity.account_id
    if account_id:
        section["account_id"] = account_id
    data["tokens"] = section
    data["last_refresh"] = to_rfc3339(tokens.last_refresh or (time.time() if now is None else now))
    write_private_json(path, data)
