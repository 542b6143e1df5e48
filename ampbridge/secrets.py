"""The Amp upstream key: per-client mapping > config > ``AMP_API_KEY`` > Amp's secrets file.

``amp login`` stores the key it gets under ``apiKey@<AMP_URL exactly as given>``. Logged in
directly, that is the upstream's entry (``apiKey@https://ampcode.com/``); logged in through
ampbridge, it is ampbridge's own URL (``apiKey@http://localhost:8317``). Both are keys issued by
the configured upstream, so both are read for it; the entry of ampcode.com is never used for
another upstream. The file is looked at again whenever it changes (size, mtime, inode), so a
fresh login is used by the very next request; an unchanged file is re-read every 5 minutes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from .credentials import key_problem
from .user_dirs import user_data_dir

logger = logging.getLogger("ampbridge.secrets")

SECRETS_CACHE_SECONDS = 300.0
ENTRY_PREFIX = "apiKey@"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")

FileSignature = tuple[int, int, int, int] | None


def amp_secrets_path(environ: Mapping[str, str]) -> Path:
    """Where ``amp login`` keeps its keys (``~/.local/share/amp/secrets.json`` on Linux)."""
    return user_data_dir("amp", environ) / "secrets.json"


def secrets_entry_name(upstream_url: str) -> str:
    """The secrets-file entry for an upstream: ``apiKey@https://ampcode.com/``."""
    return f"{ENTRY_PREFIX}{upstream_url.rstrip('/')}/"


def local_urls(port: int, allowed_hosts: Iterable[str] = ()) -> list[str]:
    """The URLs ampbridge is reached at, as an ``AMP_URL`` would spell them: the loopback names on
    ``port``, and each exact name of ``allowed-hosts`` (``*.suffix`` patterns name no URL) over
    http on ``port``, over http and https without a port (a tunnel or reverse proxy)."""
    urls = [f"http://{name}:{port}" for name in LOOPBACK_NAMES]
    for host in allowed_hosts:
        name = host.strip().lower()
        if not name or "*" in name:
            continue
        urls += [f"http://{name}:{port}", f"http://{name}", f"https://{name}"]
    return urls


def _normalised(url: str) -> str:
    """``scheme://host[:port]/path`` with scheme and host lowercased and no trailing slash."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def _signature(path: Path) -> FileSignature:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def usable_key(value: object) -> str | None:
    """A key trimmed of surrounding whitespace; None when empty, not a string, or when it cannot
    be sent in a header (inner whitespace, control characters, non-Latin-1: a paste accident)."""
    if not isinstance(value, str):
        return None
    key = value.strip()
    if not key or key_problem(key) is not None:
        return None
    return key


class AmpSecretsFile:
    """Reads the configured upstream's key from Amp's secrets file: the upstream's own entry
    first, then the entries filed under ``local_urls`` (ampbridge's own URLs)."""

    def __init__(
        self,
        path: Path,
        upstream_url: str,
        *,
        local_urls: Sequence[str] = (),
        ttl: float = SECRETS_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.entry = secrets_entry_name(upstream_url)
        self.ttl = ttl
        self.clock = clock
        upstream = _normalised(upstream_url)
        local = [url for url in dict.fromkeys(map(_normalised, local_urls)) if url != upstream]
        self._accepted = [upstream, *local]
        self._lock = threading.Lock()
        self._cached: str | None = None
        self._signature: FileSignature = None
        self._expires = float("-inf")

    def __repr__(self) -> str:
        return f"AmpSecretsFile(path={str(self.path)!r}, entry={self.entry!r})"

    def key(self) -> str | None:
        signature = _signature(self.path)
        now = self.clock()
        with self._lock:
            if signature != self._signature or now >= self._expires:
                self._cached = self._read()
                self._signature = signature
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
        if not isinstance(data, dict):
            logger.warning("cannot use Amp secrets file %s: not a JSON object", self.path)
            return None
        by_url: dict[str, tuple[str, object]] = {}
        for name, value in data.items():
            if isinstance(name, str) and name.startswith(ENTRY_PREFIX):
                by_url.setdefault(_normalised(name[len(ENTRY_PREFIX) :]), (name, value))
        for url in self._accepted:
            if url not in by_url:
                continue
            name, value = by_url[url]
            if (key := usable_key(value)) is not None:
                return key
            if isinstance(value, str) and value.strip():
                logger.warning("Amp secrets file %s: malformed key under %s; not using it", self.path, name)
        return None


class UpstreamKeyResolver:
    """Picks the key sent to the Amp upstream for one request. Never logs or shows a key.
    Blank values (``AMP_API_KEY="   "``) count as unset."""

    def __init__(
        self,
        *,
        configured_key: str = "",
        environment_key: str = "",
        secrets_file: AmpSecretsFile | None = None,
        per_client: Mapping[str, str] | None = None,
    ) -> None:
        self._configured = configured_key.strip()
        self._environment = environment_key.strip()
        self._secrets_file = secrets_file
        self._per_client = {client: key.strip() for client, key in (per_client or {}).items() if key.strip()}

    def __repr__(self) -> str:
        clients = len(self._per_client)
        return f"UpstreamKeyResolver(per_client={clients} keys, secrets_file={self._secrets_file!r})"

    def source(self, client_key: str | None = None) -> str | None:
        """Where the key for this request would come from (for ``ampbridge check``), never the key."""
        if client_key is not None and client_key in self._per_client:
            return "per-client mapping (amp-upstream-api-keys)"
        if self._configured:
            return "amp-upstream-api-key"
        if self._environment:
            return "AMP_API_KEY"
        if self._secrets_file is not None and self._secrets_file.key() is not None:
            return f"Amp secrets file {self._secrets_file.path}"
        return None

    def resolve(self, client_key: str | None = None) -> str | None:
        if client_key is not None and (mapped := self._per_client.get(client_key)):
            return mapped
        if self._configured:
            return self._configured
        if self._environment:
            return self._environment
        return self._secrets_file.key() if self._secrets_file else None
