"""What a configuration reload changed, one log line per changed setting, never a secret.

``describe_changes`` walks the settings model's fields (so a setting added later is covered
without touching this module) and names each in its YAML spelling: plain values as
``amp-upstream-url: https://a -> https://b`` and ``debug: false -> true``; lists of entries by
their number (``amp-model-mappings: 2 -> 3``); entries with a ``name`` (providers) by name, with
their own changes below them (``providers[ollama].base-url: ...``). Anything typed as a secret
(``SecretStr``, or a list, mapping or model holding one) is only said to be ``added``,
``removed`` or ``updated``.
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeGuard, Union, get_args, get_origin

from pydantic import BaseModel, SecretBytes, SecretStr

from .settings import FLAT_KEYS, Settings

_YAML_KEYS = {field: key for key, field in FLAT_KEYS.items()}
_SHOWN_LENGTH = 200


def describe_changes(old: Settings, new: Settings) -> list[str]:
    """One line per setting that differs between ``old`` and ``new``, in declaration order."""
    lines: list[str] = []
    for name, info in type(new).model_fields.items():
        key = _YAML_KEYS.get(name, name.replace("_", "-"))
        lines.extend(_describe(key, info.annotation, getattr(old, name, None), getattr(new, name, None)))
    return lines


def _describe(key: str, annotation: Any, old: Any, new: Any) -> list[str]:
    if old == new:
        return []
    annotation = _plain(annotation)
    if _is_secret(annotation):
        return [f"{key}: {_secret_change(old, new)}"]
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset) and _is_collection(old) and _is_collection(new):
        item = _plain(get_args(annotation)[0]) if get_args(annotation) else Any
        if _is_model(item) and "name" in item.model_fields:
            return _describe_named(key, item, list(old), list(new))
        if _holds_secret(item):
            return [f"{key}: {_count_changes(list(old), list(new))}"]
        if _is_model(item):
            counts = f"{len(old)} -> {len(new)}"
            if len(old) == len(new):
                counts += f" ({_count_changes(list(old), list(new))})"
            return [f"{key}: {counts}"]
    elif origin is dict and isinstance(old, Mapping) and isinstance(new, Mapping):
        args = get_args(annotation)
        value_type = _plain(args[1]) if len(args) == 2 else Any
        lines: list[str] = []
        for entry in sorted({*old, *new}, key=str):
            lines.extend(_describe(f"{key}.{_show(entry)}", value_type, old.get(entry), new.get(entry)))
        return lines
    elif _is_model(annotation) and isinstance(old, BaseModel) and isinstance(new, BaseModel):
        return _describe_fields(f"{key}.", annotation, old, new)
    if _holds_secret(annotation):  # a shape not handled above: say no more than that it changed
        return [f"{key}: updated"]
    return [f"{key}: {_show(old)} -> {_show(new)}"]


def _describe_named(key: str, item: type[BaseModel], old: list[Any], new: list[Any]) -> list[str]:
    """Entries matched by ``name``: the count (and names) first, then each kept entry's changes."""
    old_by_name = {entry.name: entry for entry in old}
    new_by_name = {entry.name: entry for entry in new}
    added = [name for name in new_by_name if name not in old_by_name]
    removed = [name for name in old_by_name if name not in new_by_name]
    lines: list[str] = []
    if added or removed or len(old) != len(new):
        details = [f"added {_names(added)}"] if added else []
        details += [f"removed {_names(removed)}"] if removed else []
        suffix = f" ({'; '.join(details)})" if details else ""
        lines.append(f"{key}: {len(old)} -> {len(new)}{suffix}")
    for name, entry in new_by_name.items():
        if name in old_by_name:
            lines.extend(_describe_fields(f"{key}[{_show(name)}].", item, old_by_name[name], entry))
    if not lines:  # same entries, other order: the order decides which one serves first
        lines.append(f"{key}: reordered")
    return lines


def _describe_fields(prefix: str, model: type[BaseModel], old: BaseModel, new: BaseModel) -> list[str]:
    lines: list[str] = []
    for name, info in model.model_fields.items():
        key = prefix + (info.alias or name.replace("_", "-"))
        lines.extend(_describe(key, info.annotation, getattr(old, name, None), getattr(new, name, None)))
    return lines


def _secret_change(old: Any, new: Any) -> str:
    had, has = _secret_set(old), _secret_set(new)
    if has and not had:
        return "added"
    if had and not has:
        return "removed"
    return "updated"


def _secret_set(value: Any) -> bool:
    if isinstance(value, SecretStr | SecretBytes):
        return bool(value.get_secret_value())
    return bool(value)


def _count_changes(old: list[Any], new: list[Any]) -> str:
    """``"1 added, 2 updated"``: entries compared whole; a changed entry counts as updated."""
    unmatched = list(old)
    added = 0
    for entry in new:
        if entry in unmatched:
            unmatched.remove(entry)
        else:
            added += 1
    removed = len(unmatched)
    updated = min(added, removed)
    counts = {"added": added - updated, "removed": removed - updated, "updated": updated}
    parts = [f"{count} {word}" for word, count in counts.items() if count]
    return ", ".join(parts) if parts else "reordered"


# --- types ----------------------------------------------------------------------------------


def _plain(annotation: Any) -> Any:
    """``Annotated[X, ...]`` -> ``X``; ``X | None`` -> ``X``."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(options) == 1:
            return _plain(options[0])
    return annotation


def _is_secret(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, SecretStr | SecretBytes)


def _is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _holds_secret(annotation: Any) -> bool:
    """Whether a value of this type is or contains a secret, at any depth."""
    annotation = _plain(annotation)
    if _is_secret(annotation):
        return True
    if _is_model(annotation):
        return any(_holds_secret(info.annotation) for info in annotation.model_fields.values())
    return any(_holds_secret(arg) for arg in get_args(annotation) if arg is not Ellipsis)


def _is_collection(value: Any) -> bool:
    return isinstance(value, Sequence | set | frozenset) and not isinstance(value, str | bytes)


# --- showing values -------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value as a log line may show it: YAML-like scalars, control characters escaped, cut."""
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in _as_text(value))
    return text if len(text) <= _SHOWN_LENGTH else f"{text[:_SHOWN_LENGTH]}...({len(text)} chars)"


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple | set | frozenset | dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value) or '""'


def _names(names: list[Any]) -> str:
    return ", ".join(_show(name) for name in names)
