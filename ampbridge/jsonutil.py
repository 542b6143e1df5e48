"""JSON in and out, the way every part of ampbridge reads and writes bodies."""

from __future__ import annotations

import json
from typing import Any


def parse_json_object(text: str | bytes) -> dict[str, Any] | None:
    """The JSON object in ``text``, or None for anything else (not JSON, too deep, an array)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON, characters kept as they are (no ``\\u`` escapes added)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
