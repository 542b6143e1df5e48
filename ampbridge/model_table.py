"""Where each configured model is served, for ``ampbridge check``.

A CLIProxyAPI user moving over wants to see, before starting anything, that every model of their
file is still served: by which provider, under which upstream name, in which wire format, and
which parts of the file were not taken. No I/O: discovered model lists are not fetched here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .backend import Backend
from .cliproxy import NotTaken
from .settings import ModelAlias, Settings

DISCOVERED = "(the backend's own model list)"


@dataclass(frozen=True)
class ModelPlacement:
    """One model clients may ask for, and where it goes."""

    model: str  # the name clients use (a glob, or DISCOVERED when the backend lists its own)
    provider: str
    upstream: tuple[str, ...]  # the names sent upstream (several: a pool, used in turn)
    wire_format: str  # "anthropic", "openai (responses)", "google (vertex paths)", ...
    section: str | None  # the CLIProxyAPI section it was read from; None: ampbridge's providers
    prefix: str = ""  # also addressed as "{prefix}/{model}"


def describe_models(settings: Settings) -> list[ModelPlacement]:
    """Every configured model, in the order requests are matched (first provider wins)."""
    placements = []
    for config in settings.providers:
        backend = Backend(config)
        section = settings.imported.section_of(config.name)
        fmt = _wire_format(config.type, config.api_format, config.path_style)

        def place(model: str, upstream: tuple[str, ...]) -> ModelPlacement:
            return ModelPlacement(model, config.name, upstream, fmt, section, config.prefix)  # noqa: B023

        if config.models is None:
            placements.append(place(DISCOVERED, ()))
            continue
        names = {e.client_name.lower() for e in config.models if isinstance(e, ModelAlias)}
        for name in backend.listed:
            placements.append(place(name, tuple(backend.pools[name.lower()])))
        for entry in config.models:
            if isinstance(entry, str) and entry.lower() not in names and entry not in backend.listed:
                placements.append(place(entry, (entry,)))  # a glob: sent as asked
    return placements


def not_taken(settings: Settings) -> list[NotTaken]:
    """The CLIProxyAPI settings in the file that ampbridge does not implement, with advice."""
    return list(settings.imported.not_taken)


def skipped_entries(settings: Settings) -> list[tuple[str, str]]:
    """CLIProxyAPI entries not served, and why (``disabled: true``, no base-url, no api-key)."""
    return list(settings.imported.skipped)


def describe_lines(settings: Settings) -> list[str]:
    """``describe_models``, ``skipped_entries`` and ``not_taken`` as lines for a terminal."""
    lines = []
    for p in describe_models(settings):
        asked = f"{p.model} (also {p.prefix}/{p.model})" if p.prefix and p.model != DISCOVERED else p.model
        sent = f" as {' | '.join(p.upstream)}" if p.upstream and p.upstream != (p.model,) else ""
        lines.append(f"  {asked} -> {p.provider} [{p.wire_format}]{sent}")
    lines += [f"  not served: {label}: {why}" for label, why in skipped_entries(settings)]
    lines += [
        f"  not taken: {item.key}: {item.advice}{'' if item.in_effect else ' (off in the file)'}"
        for item in not_taken(settings)
    ]
    return lines


def _wire_format(provider_type: str, api_format: str, path_style: str) -> str:
    if provider_type == "openai" and api_format != "both":
        return f"openai ({api_format})"
    if provider_type == "google" and path_style == "vertex":
        return "google (vertex paths)"
    return provider_type
