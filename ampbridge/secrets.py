"""The Amp upstream key: per-client mapping > config > ``AMP_API_KEY`` > Amp's secrets file."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import platformdirs

logger = logging.getLogger("ampbridge.secrets")

SECRETS_CACHE_SECONDS = 300.0


def amp_secrets_path() -> Path:
    """Where ``amp login`` keeps its keys (``~/.local/share/amp/secrets.json`` on Linux)."""
    return platformdirs.user_data_path("amp") / "secrets.json"


def secrets_entry_name(upstream_url: str) -> str:
    """The secrets-file entry for an upstream: ``apiKey@https://ampcode.com/``."""
    return f"apiKey@{upstream_url.rstrip('/')}/"


class AmpSecretsFile:
    """Reads one upstream's key from Amp's secrets file, caching the result (key or none)."""

    def __init__(
        self,
        path: Path,
        upstream_url: str,
        *,
        ttl: float = SECRETS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.entry = secrets_entry_name(upstream_url)
        self.ttl = ttl
        self.clock = clock
        self._cached: str | None = None
        self._expires = float("-inf")

    def __repr__(self) -> str:
        return f"AmpSecretsFile(path={str(self.path)!r}, entry={self.entry!r})"

    def key(self) -> str | None:
        now = self.clock()
        if now >= self._expires:
            self._cached = self._read()
            self._expires = now + self.ttl
        return self._cached

    def _read(self) -> str | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            logger.warning("cannot use Amp secrets file %s: %s", self.path, type(error).__name__)
            return None
        value = data.get(self.entry) if isinstance(data, dict) else None
        if not isinstance(value, str) or not value:
            return None
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            logger.warning("Amp secrets file %s: malformed key for %s; not using it", self.path, self.entry)
            return None
        return value


class UpstreamKeyResolver:
    """Picks the key sent to the Amp upstream for one request. Never logs or shows a key."""

    def __init__(
        self,
        *,
        configured_key: str = "",
        environment_key: str = "",
        secrets_file: AmpSecretsFile | None = None,
        per_client: Mapping[str, str] | None = None,
    ) -> None:
        self._configured = configured_key
        self._environment = environment_key
        self._secrets_file = secrets_file
        self._per_client = dict(per_client or {})

    def __repr__(self) -> str:
        clients = len(self._per_client)
        return f"UpstreamKeyResolver(per_client={clients} keys, secrets_file={self._secrets_file!r})"

    def resolve(self, client_key: str | None = None) -> str | None:
        if client_key is not None and (mapped := self._per_client.get(client_key)):
            return mapped
        if self._configured:
            return self._configured
        if self._environment:
            return self._environment
        return self._secrets_file.key() if self._secrets_file else None
