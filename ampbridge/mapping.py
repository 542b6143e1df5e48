"""Model mappings and the routing decision for one model call (SPEC §4.1)."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence

from .models import LocalModels, WireFormat, split_thinking_suffix
from .settings import ModelMapping


class RouteDecision(enum.StrEnum):
    LOCAL = "LOCAL"  # a local backend serves the model
    MAPPED = "MAPPED"  # a mapping's target is served locally
    AMP_CREDITS = "AMP_CREDITS"  # forwarded to the Amp upstream
    NO_PROVIDER = "NO_PROVIDER"  # nobody can serve it


class ModelMapper:
    """Exact entries (case-insensitive) first, in file order; then regex entries, in file order.
    A regex entry matches anywhere in the name (anchor it with ``^...$`` to match it whole)."""

    def __init__(self, mappings: Sequence[ModelMapping]) -> None:
        self.exact: dict[str, list[str]] = {}
        self.regexes: list[tuple[re.Pattern[str], str]] = []
        for mapping in mappings:
            if mapping.regex:
                self.regexes.append((re.compile(mapping.source, re.IGNORECASE), mapping.target))
            else:
                self.exact.setdefault(mapping.source.lower(), []).append(mapping.target)

    def __bool__(self) -> bool:
        return bool(self.exact or self.regexes)

    def targets(self, model: str) -> Iterator[str]:
        yield from self.exact.get(model.lower(), ())
        for pattern, target in self.regexes:
            if pattern.search(model):
                yield target


def decide(
    model: str,
    wire_format: WireFormat,
    local: LocalModels,
    mapper: ModelMapper,
    *,
    force_mappings: bool = False,
    upstream_available: bool = True,
) -> tuple[RouteDecision, str]:
    """The decision for ``model`` and the model name that will serve it."""
    base, suffix = split_thinking_suffix(model)

    def mapped_target() -> str | None:
        for target in mapper.targets(base):
            target_base, target_suffix = split_thinking_suffix(target)
            if local.serves(target_base, wire_format):
                return target_base + (target_suffix or suffix)
        return None

    if force_mappings and mapper and (target := mapped_target()):
        return RouteDecision.MAPPED, target
    if local.serves(base, wire_format):
        return RouteDecision.LOCAL, model
    if not force_mappings and mapper and (target := mapped_target()):
        return RouteDecision.MAPPED, target
    return (RouteDecision.AMP_CREDITS if upstream_available else RouteDecision.NO_PROVIDER), model
