"""Which kind of path a forwarded request is on, and one warning per path shape nobody knows.

Amp keeps adding endpoints. ampbridge forwards them anyway (SPEC §4.2), but a path it has never
seen is the first sign of a new Amp release, so the first request on an unknown *shape* logs one
warning naming that shape. A shape is the path with its ids replaced by ``{id}``
(``/api/thread-actors/T-0000…`` → ``/api/thread-actors/{id}``), so one new endpoint warns once,
not once per thread. The set of shapes seen is capped; memory stays bounded whatever clients send.

Known shapes come from SPEC §4.2 and the captured traffic of the real CLIs
(``fixtures/amp-traffic``): the ``/api/`` families Amp uses (any path below them), the model
routes, the browser routes, and the thread-actor gateway paths.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from enum import Enum

logger = logging.getLogger("ampbridge.drift")

# /api/<family>/... forwarded to the Amp upstream (SPEC §4.2 and captured traffic).
CONTROL_PLANE_FAMILIES = frozenset(
    {
        "internal",
        "user",
        "auth",
        "meta",
        "ads",
        "telemetry",
        "threads",
        "thread-actors",
        "otel",
        "tab",
        "durable-thread-workers",
    }
)
BROWSER_ROOTS = frozenset({"auth", "threads", "docs", "settings"})
BROWSER_FEEDS = frozenset({"/threads.rss", "/news.rss"})
# The thread-actor gateway (captured from native CLI 0.0.1790142911): one actor name, then the
# WebSocket endpoint or HTTP calls under request/.
ACTOR_SHAPES = (
    re.compile(r"^/actors/gateway/[A-Za-z][A-Za-z0-9_-]*/websocket/?$"),
    re.compile(r"^/actors/gateway/[A-Za-z][A-Za-z0-9_-]*/request(?:/.*)?$"),
)
ASSET_SUFFIX = re.compile(
    r"\.(?:js|mjs|css|map|png|jpe?g|gif|svg|webp|avif|ico|woff2?|ttf|otf|json|txt|webmanifest)$"
)
DEFAULT_SHAPE_CAP = 512
MAX_SEGMENT_LENGTH = 40
MAX_SEGMENTS = 12

_ID_SEGMENT = re.compile(
    r"""^(?:
        \d+                                                       # numbers
      | [0-9a-fA-F]{8,}                                           # hex ids and hashes
      | (?:[A-Za-z]{1,3}-)?[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}  # (T-)uuids
      | [A-Za-z]{1,3}-[A-Za-z0-9]{12,}                            # prefixed ids: M-0353l4pJrPn8HWdhEq5uyL
      | (?=[^/]*\d)[A-Za-z0-9_~.=-]{20,}                          # long tokens with digits
    )$""",
    re.VERBOSE,
)


class PathKind(Enum):
    PROVIDER = "provider"  # /api/provider/... (model calls forwarded for Amp credits)
    CONTROL_PLANE = "control_plane"
    BROWSER = "browser"
    ACTORS = "actors"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class PathClass:
    kind: PathKind
    shape: str
    known: bool


def _is_id(segment: str) -> bool:
    return len(segment) > MAX_SEGMENT_LENGTH or _ID_SEGMENT.match(segment) is not None


def path_shape(path: str) -> str:
    """``path`` with id-like (or over-long) segments replaced by ``{id}``; at most 12 segments."""
    segments = path.split("/")
    kept = segments[: MAX_SEGMENTS + 1]
    shaped = "/".join("{id}" if _is_id(segment) else segment for segment in kept)
    return shaped + ("/..." if len(segments) > len(kept) else "")


def classify_path(path: str) -> PathClass:
    shape = path_shape(path)
    segments = path.split("/")
    first = segments[1] if len(segments) > 1 else ""
    second = segments[2] if len(segments) > 2 else ""
    if first == "api":
        if second == "provider":
            return PathClass(PathKind.PROVIDER, shape, len(segments) > 4)
        return PathClass(PathKind.CONTROL_PLANE, shape, second in CONTROL_PLANE_FAMILIES)
    if first == "actors":
        return PathClass(PathKind.ACTORS, shape, any(p.match(path) for p in ACTOR_SHAPES))
    if first in BROWSER_ROOTS or path in BROWSER_FEEDS:
        return PathClass(PathKind.BROWSER, shape, True)
    if ASSET_SUFFIX.search(path):
        return PathClass(PathKind.BROWSER, shape, True)  # a page's asset (browser proxy mode)
    return PathClass(PathKind.UNKNOWN, shape, False)


class DriftWarner:
    """Logs one warning the first time an unknown path shape is forwarded. Thread-safe; keeps at
    most ``cap`` shapes, then says once that it stops warning about new ones."""

    def __init__(self, *, cap: int = DEFAULT_SHAPE_CAP) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self._cap = cap
        self._seen: set[str] = set()
        self._full = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DriftWarner(seen={len(self._seen)}, cap={self._cap})"

    def observe(self, method: str, path: str) -> PathClass:
        found = classify_path(path)
        if found.known:
            return found
        with self._lock:
            if found.shape in self._seen or self._full:
                return found
            if len(self._seen) >= self._cap:
                self._full = True
                logger.warning("%d unknown Amp path shapes seen; not warning about more", self._cap)
                return found
            self._seen.add(found.shape)
        logger.warning(
            "forwarding %s %s: a %s path shape ampbridge does not know (a newer Amp release?)",
            method,
            found.shape,
            found.kind.value.replace("_", "-"),
        )
        return found
