"""Model names: wire formats, thinking suffixes, and which models are served locally."""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .routes import Endpoint


class WireFormat(enum.StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GOOGLE = "google"


_THINKING_SUFFIX = re.compile(r"^(?P<base>.*?)(?P<suffix>\([^()]*\))$", re.DOTALL)


def split_thinking_suffix(model: str) -> tuple[str, str]:
    """``"gpt-5(high)"`` -> ``("gpt-5", "(high)")``; a name without a suffix -> ``(name, "")``.
    A suffix with nothing in it (``"gpt-5()"``, ``"gpt-5( )"``) is no suffix: ``("gpt-5", "")``."""
    match = _THINKING_SUFFIX.match(model)
    if match and match["base"]:
        suffix = match["suffix"]
        return match["base"], suffix if suffix[1:-1].strip() else ""
    return model, ""


def model_to_send(model: str) -> str:
    """The name a backend gets for ``model``: the same, less an empty thinking suffix
    (``"gpt-5()"`` -> ``"gpt-5"``; ``"gpt-5(high)"`` is kept)."""
    base, suffix = split_thinking_suffix(model)
    return base + suffix


def describe_model(model: str | None, limit: int = 120) -> str:
    """A model name fit for a log line or an error message: control characters escaped (no
    forged log lines) and very long names cut."""
    if model is None:
        return "-"
    if len(model) <= limit and model.isprintable():
        return model  # the usual name, as it is
    text = model if len(model) <= limit else f"{model[:limit]}...({len(model)} chars)"
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


@runtime_checkable
class LocalModels(Protocol):
    """Answers whether a model is served locally for a wire format."""

    def serves(self, model: str, wire_format: WireFormat) -> bool: ...


@runtime_checkable
class BodyStreamingModels(LocalModels, Protocol):
    """``LocalModels`` whose app also says which calls it sends on as their body arrives, never
    reading it whole. Only those local calls start before a large body has arrived (an app that
    reads the body whole would hold it a second time, for nothing)."""

    def streams_body(self, model: str, wire_format: WireFormat, endpoint: Endpoint) -> bool: ...


class ModelPatterns:
    """Names and globs (``claude-sonnet-4-5*``), matched case-insensitively, any wire format."""

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self.exact = frozenset(p.lower() for p in patterns if not _is_glob(p))
        self.globs = tuple(re.compile(fnmatch.translate(p.lower())) for p in patterns if _is_glob(p))

    def __repr__(self) -> str:
        return f"ModelPatterns(exact={sorted(self.exact)}, globs={len(self.globs)})"

    def matches(self, model: str) -> bool:
        if not self.exact and not self.globs:
            return False
        lowered = model.lower()
        return lowered in self.exact or any(glob.match(lowered) for glob in self.globs)

    def serves(self, model: str, wire_format: WireFormat) -> bool:
        return self.matches(model)


class ModelPredicate:
    """Adapts ``predicate(model) -> bool`` to ``LocalModels``."""

    def __init__(self, predicate: Callable[[str], bool]) -> None:
        self.predicate = predicate

    def serves(self, model: str, wire_format: WireFormat) -> bool:
        return self.predicate(model)


# What a caller may pass as "the models served locally".
LocalModelsLike = LocalModels | Callable[[str], bool] | Iterable[str]


def as_local_models(local: LocalModelsLike) -> LocalModels:
    """Names and globs, a predicate, or a ``LocalModels``; a generator is read once, here."""
    if isinstance(local, LocalModels):
        return local
    if callable(local):
        return ModelPredicate(local)
    if isinstance(local, str):
        return ModelPatterns([local])
    return ModelPatterns(list(local))


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")
