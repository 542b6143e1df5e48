"""CLIProxyAPI's provider sections, read as ampbridge providers (SPEC §13).

A CLIProxyAPI user's ``config.yaml`` keeps working: ``claude-api-key``, ``codex-api-key``,
``gemini-api-key``, ``vertex-api-key`` and ``openai-compatibility`` entries become provider
entries in ampbridge's own schema (plain dicts, validated by ``settings.ProviderConfig``), in
file order, with the wire format, default base URL, auth header, model aliases, exclusions and
prefixes they had there. Entries of one section that differ only in their keys become one
provider whose keys are used in turn. The CLIProxyAPI keys ampbridge does not implement are
listed with what to use instead. Plain data in, plain data out: no I/O, no settings import.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

SECTIONS = ("claude-api-key", "codex-api-key", "gemini-api-key", "vertex-api-key", "openai-compatibility")

# CLIProxyAPI top-level keys ampbridge does not implement -> what to do instead.
_NO_OAUTH = "ampbridge reads no OAuth logins"
_NO_RETRY = "ampbridge does not retry model calls (a retried call may be billed twice)"
NOT_IMPLEMENTED: dict[str, str] = {
    "auth-dir": (
        "OAuth logins are not read: use API keys in the *-api-key sections, or a `type: chatgpt` "
        "provider (`ampbridge login chatgpt`) for a ChatGPT subscription; Claude and Gemini "
        "subscription logins are not offered (their vendors forbid third-party use)"
    ),
    "remote-management": (
        "no management API or web panel: edit this file (it is re-read on change); "
        "`ampbridge check` shows the result"
    ),
    "tls": "plain HTTP only: keep ampbridge on loopback or put a TLS reverse proxy (Caddy, nginx) in front",
    "usage-statistics-enabled": "ampbridge records model calls in its usage ledger and serves GET /metrics",
    "redis-usage-queue-retention-seconds": "see usage-retention-days",
    "request-log": "set debug: true for detailed request logs",
    "logs-max-total-size-mb": "logging-to-file rotates its own files",
    "error-logs-max-files": "logging-to-file rotates its own files",
    "commercial-mode": "not needed: ampbridge keeps no request bodies",
    "pprof": "not available",
    "ws-auth": "api-keys protects every route, WebSockets included",
    "enable-gemini-cli-endpoint": "the Gemini CLI internal endpoints are not served",
    "nonstream-keepalive-interval": "replies are relayed as they arrive, without keep-alive padding",
    "streaming": "streams are relayed as they arrive, without keep-alive comments or bootstrap retries",
    "passthrough-headers": "not configurable: upstream reply headers are relayed, hop-by-hop ones dropped",
    "plugins": "no plugin system: ampbridge is a library, wrap its ASGI app instead",
    "request-retry": _NO_RETRY,
    "max-retry-credentials": _NO_RETRY,
    "max-retry-interval": _NO_RETRY,
    "disable-cooling": "keys are used in turn without cool-down",
    "auth-auto-refresh-workers": _NO_OAUTH,
    "quota-exceeded": "not implemented (it concerns Gemini CLI and Antigravity logins)",
    "routing": (
        "several keys or pooled models are used in turn (round robin); "
        "fill-first and session affinity are not implemented"
    ),
    "force-model-prefix": "not implemented: an unprefixed name is served by entries with or without a prefix",
    "codex": "requests go out as the client made them",
    "codex-header-defaults": "requests go out with the client's own headers",
    "claude-header-defaults": "requests go out with the client's own headers",
    "disable-image-generation": "not implemented",
    "gpt-image-2-base-model": "not implemented",
    "antigravity-signature-cache-enabled": _NO_OAUTH,
    "antigravity-signature-bypass-strict": _NO_OAUTH,
    "oauth-model-alias": f"{_NO_OAUTH}; for API keys use models name/alias in the sections",
    "oauth-excluded-models": f"{_NO_OAUTH}; for API keys use excluded-models in the sections",
    "payload": "request payloads are sent as the client made them (no payload rules)",
    "generative-language-api-key": "CLIProxyAPI no longer read it either: use gemini-api-key",
}
# Keys only later CLIProxyAPI versions have (after its Amp support was removed).
for _key in (
    "credential-concurrency", "credential-in-flight", "save-cooldown-status",
    "transient-error-cooldown-seconds", "disable-claude-cloak-mode", "claude-code",
    "video-result-auth-cache-ttl", "antigravity", "xai", "interactions-api-key", "xai-api-key",
    "oauth-request-scoped-errors",
):  # fmt: skip
    NOT_IMPLEMENTED[_key] = "not implemented"

CLIPROXY_KEYS = frozenset(SECTIONS) | frozenset(NOT_IMPLEMENTED)

# Per-entry keys: the ones read, and the ones CLIProxyAPI had that ampbridge does not use.
_ENTRY_KEYS = ("api-key", "base-url", "proxy-url", "headers", "models", "excluded-models", "prefix")
_ENTRY_IGNORED = {
    "priority": "entries are tried in file order",
    "disable-cooling": "keys are used in turn without cool-down",
    "weight": "keys are used in turn, equally",
    "request-retry": _NO_RETRY,
    "request-scoped-errors": "not implemented",
    "cloak": "requests go out as the client made them",
    "experimental-cch-signing": "not implemented",
    "rebuild-mid-system-message": "not implemented",
    "fingerprint-profile": "not implemented",
    "websockets": "the Responses API is called over HTTP",
    "alpha-search": "not implemented",
    "support-prompt-cache-key": "not implemented",
}
_COMPAT_KEYS = ("name", "base-url", "api-key-entries", "api-keys", "models", "headers", "prefix", "disabled")
_MODEL_KEYS = ("name", "alias")
_MODEL_IGNORED = (
    "image", "thinking", "display-name", "max-context-length", "input-modalities",
    "output-modalities", "force-mapping", "is-compat", "fork",
)  # fmt: skip
_KEY_ENTRY_KEYS = ("api-key", "proxy-url", "weight")

YamlPath = tuple[str | int, ...]


class SectionError(ValueError):
    """A section cannot be read; ``path`` is where in the YAML (``("claude-api-key", 0)``)."""

    def __init__(self, path: YamlPath, message: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class ImportedProvider:
    """A provider entry (ampbridge's schema) made from one or more entries of a section."""

    entry: dict[str, Any]
    section: str
    sources: tuple[YamlPath, ...]  # the section entries it came from

    @property
    def name(self) -> str:
        return str(self.entry["name"])


@dataclass(frozen=True)
class NotTaken:
    """A CLIProxyAPI key present in the file that ampbridge does not implement."""

    key: str  # "routing" or "claude-api-key[2].cloak"
    advice: str
    in_effect: bool  # set to something that did something there (not off / empty)


@dataclass(frozen=True)
class Imported:
    """What the CLIProxyAPI parts of a config file became."""

    providers: tuple[ImportedProvider, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (entry label, why), as CLIProxyAPI dropped them
    not_taken: tuple[NotTaken, ...] = ()
    problems: tuple[str, ...] = ()  # unknown keys inside entries, discarded values

    def section_of(self, provider_name: str) -> str | None:
        """The section a provider was read from, or None for ampbridge's own providers."""
        return next((p.section for p in self.providers if p.name == provider_name), None)


def unknown_key_message(key: str, known: list[str]) -> str:
    """``unknown key 'api-kye' (did you mean 'api-key'?)``."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
    return f"unknown key '{key}'{hint}"


def in_effect(key: str, value: Any) -> bool:
    """Whether a setting would have done something in CLIProxyAPI (not off, zero or empty)."""
    if key == "remote-management" and isinstance(value, Mapping):
        return bool(value.get("secret-key"))  # an empty secret key turned the API off
    if key == "routing" and isinstance(value, Mapping):  # round robin is what ampbridge does
        return value.get("strategy", "round-robin") != "round-robin" or bool(value.get("session-affinity"))
    if key == "auth-dir":
        return True  # CLIProxyAPI read ~/.cli-proxy-api even when empty
    if isinstance(value, Mapping):
        for switch in ("enable", "enabled"):
            if switch in value:
                return bool(value[switch])
        return any(in_effect("", item) for item in value.values())
    if isinstance(value, list):
        return bool(value)
    return bool(value) and value != "0"


def import_sections(data: Mapping[str, Any]) -> Imported:
    """The provider sections and not-implemented keys of a CLIProxyAPI file's top level."""
    reader = _Reader()
    for key, value in data.items():
        if key in NOT_IMPLEMENTED:
            reader.not_taken.append(NotTaken(str(key), NOT_IMPLEMENTED[key], in_effect(str(key), value)))
        elif key in SECTIONS and value is not None:
            if not isinstance(value, list):
                raise SectionError((key,), "must be a list of entries")
            for index, entry in enumerate(value):
                if not isinstance(entry, Mapping):
                    raise SectionError((key, index), "must be a mapping of keys")
                reader.read(str(key), index, entry)
    return Imported(
        tuple(reader.providers), tuple(reader.skipped), tuple(reader.not_taken), tuple(reader.problems)
    )


class _Reader:
    def __init__(self) -> None:
        self.providers: list[ImportedProvider] = []
        self.skipped: list[tuple[str, str]] = []
        self.not_taken: list[NotTaken] = []
        self.problems: list[str] = []

    def read(self, section: str, index: int, entry: Mapping[str, Any]) -> None:
        label = f"{section}[{index + 1}]"
        path: YamlPath = (section, index)
        compat = section == "openai-compatibility"
        self._check_keys(label, entry, _COMPAT_KEYS if compat else _ENTRY_KEYS)
        if compat:
            self._read_compat(label, path, entry)
            return
        base_url = _text(entry.get("base-url"))
        key = _text(entry.get("api-key"))
        if section == "codex-api-key" and not base_url:
            self.skipped.append((label, "no base-url (CLIProxyAPI dropped these too)"))
            return
        if section == "gemini-api-key" and not key:
            self.skipped.append((label, "no api-key (CLIProxyAPI dropped these too)"))
            return
        provider: dict[str, Any] = {"name": label, **_FORMATS[section]}
        if base_url:
            provider["base-url"] = base_url
        if section == "claude-api-key":
            host = urlsplit(base_url).hostname if base_url else "api.anthropic.com"
            provider["auth-header"] = "x-api-key" if host == "api.anthropic.com" else "bearer"
        self._common(label, path, entry, provider, vertex=section == "vertex-api-key")
        if entry.get("proxy-url") is not None:
            provider["proxy-url"] = _text(entry.get("proxy-url"))
        self._add(provider, section, path, [key] if key else [])

    def _read_compat(self, label: str, path: YamlPath, entry: Mapping[str, Any]) -> None:
        name = _text(entry.get("name"))
        if name:
            label = f"openai-compatibility:{name}"
        if entry.get("disabled") is True:
            self.skipped.append((label, "disabled: true"))
            return
        base_url = _text(entry.get("base-url"))
        if not base_url:
            self.skipped.append((label, "no base-url (CLIProxyAPI dropped these too)"))
            return
        provider: dict[str, Any] = {"name": label, **_FORMATS["openai-compatibility"], "base-url": base_url}
        self._common(label, path, entry, provider, vertex=False)
        provider.setdefault("models", [])  # no built-in list here: only the configured models
        # Keys by proxy: the keys of one proxy are one provider, used in turn.
        by_proxy: dict[str, list[str]] = {}
        for key, proxy in self._compat_keys(label, path, entry):
            by_proxy.setdefault(proxy, []).append(key)
        if not by_proxy:
            by_proxy[""] = []  # no keys: requests go out without an Authorization header
        for number, (proxy, keys) in enumerate(by_proxy.items(), start=1):
            named = dict(provider, name=label if number == 1 else f"{label}#{number}")
            if proxy:
                named["proxy-url"] = proxy
            self._add(named, "openai-compatibility", path, keys)

    def _compat_keys(self, label: str, path: YamlPath, entry: Mapping[str, Any]) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        entries = entry.get("api-key-entries") or []
        if not isinstance(entries, list):
            raise SectionError((*path, "api-key-entries"), "must be a list of {api-key, proxy-url}")
        for number, item in enumerate(entries):
            if not isinstance(item, Mapping):
                raise SectionError(
                    (*path, "api-key-entries", number), "must be a mapping {api-key, proxy-url}"
                )
            self._check_keys(f"{label}.api-key-entries[{number + 1}]", item, _KEY_ENTRY_KEYS)
            if key := _text(item.get("api-key")):
                keys.append((key, _text(item.get("proxy-url"))))
        legacy = entry.get("api-keys") or []  # the legacy spelling: flat strings
        if not isinstance(legacy, list):
            raise SectionError((*path, "api-keys"), "must be a list of keys")
        keys.extend((key, "") for key in map(_text, legacy) if key)
        return keys

    def _common(
        self, label: str, path: YamlPath, entry: Mapping[str, Any], provider: dict[str, Any], *, vertex: bool
    ) -> None:
        headers = entry.get("headers")
        if headers:
            if not isinstance(headers, Mapping):
                raise SectionError((*path, "headers"), "must be a mapping of header names to values")
            provider["headers"] = {str(name): _text(value) for name, value in headers.items()}
        models = self._models(label, path, entry.get("models"), vertex=vertex)
        if models:
            provider["models"] = models
        excluded = entry.get("excluded-models")
        if excluded:
            if not isinstance(excluded, list):
                raise SectionError((*path, "excluded-models"), "must be a list of names or globs")
            provider["excluded-models"] = [_text(item) for item in excluded if _text(item)]
        prefix = _text(entry.get("prefix")).strip("/")
        if "/" in prefix:
            self.problems.append(
                f"{label}: prefix {prefix!r} has a '/' inside; discarded, as CLIProxyAPI did"
            )
        elif prefix:
            provider["prefix"] = prefix

    def _models(self, label: str, path: YamlPath, models: Any, *, vertex: bool) -> list[Any]:
        if not models:
            return []
        if not isinstance(models, list):
            raise SectionError((*path, "models"), "must be a list of {name, alias}")
        result: list[Any] = []
        for number, item in enumerate(models):
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, Mapping):
                raise SectionError((*path, "models", number), "must be a mapping {name, alias}")
            self._check_keys(f"{label}.models[{number + 1}]", item, (*_MODEL_KEYS, *_MODEL_IGNORED))
            name, alias = _text(item.get("name")), _text(item.get("alias"))
            if not name or (vertex and not alias):
                self.problems.append(
                    f"{label}.models[{number + 1}]: needs a name{' and an alias' if vertex else ''}; dropped"
                )
                continue
            result.append({"name": name, "alias": alias} if alias else {"name": name})
        return result

    def _check_keys(self, label: str, entry: Mapping[str, Any], known: tuple[str, ...]) -> None:
        for key, value in entry.items():
            key = str(key)
            if key in known:
                continue
            if key in _ENTRY_IGNORED:
                self.not_taken.append(NotTaken(f"{label}.{key}", _ENTRY_IGNORED[key], in_effect(key, value)))
                continue
            message = unknown_key_message(key, [*known, *_ENTRY_IGNORED])
            self.problems.append(f"{label}: {message}; ignored, as CLIProxyAPI did")

    def _add(self, provider: dict[str, Any], section: str, path: YamlPath, keys: list[str]) -> None:
        """Append, or merge into an earlier provider of the section that differs only in keys."""
        shape = _shape(provider)
        for index, earlier in enumerate(self.providers):
            if earlier.section == section and _shape(earlier.entry) == shape:
                entry = dict(earlier.entry)
                entry["api-keys"] = [*entry.get("api-keys", []), *keys]
                self.providers[index] = ImportedProvider(entry, section, (*earlier.sources, path))
                return
        if keys:
            provider["api-keys"] = keys
        self.providers.append(ImportedProvider(provider, section, (path,)))


# The wire format and endpoints of each section.
_FORMATS: dict[str, dict[str, Any]] = {
    "claude-api-key": {"type": "anthropic"},
    "codex-api-key": {"type": "openai", "api-format": "responses", "base-url-includes-version": True},
    "gemini-api-key": {"type": "google"},
    "vertex-api-key": {"type": "google", "path-style": "vertex"},
    "openai-compatibility": {
        "type": "openai",
        "api-format": "chat-completions",
        "base-url-includes-version": True,
    },
}


def _shape(entry: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in entry.items() if k not in ("name", "api-keys")}, sort_keys=True)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()
