"""Settings: constructor arguments > ``AMPBRIDGE_*`` environment > YAML file > defaults.

The YAML file accepts the flat keys (``amp-upstream-url``) and CLIProxyAPI's nested ``ampcode:``
block (``upstream-url``), so an existing CLIProxyAPI ``config.yaml`` works unchanged. Keys this
model does not know are ignored with one warning. Errors name the key and, for the file, the line.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import platformdirs
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .credentials import key_problem
from .http_client import check_proxy_url

logger = logging.getLogger("ampbridge.settings")

ENV_PREFIX = "AMPBRIDGE_"
CONFIG_ENV = "AMPBRIDGE_CONFIG"
CONFIG_FILENAME = "config.yaml"
DEFAULT_UPSTREAM = "https://ampcode.com"

# The nested keys of CLIProxyAPI's ``ampcode:`` block; the flat keys are the fields' own
# kebab-case names (``FLAT_KEYS``, below the model).
NESTED_BLOCK = "ampcode"
NESTED_KEYS = {
    "upstream-url": "amp_upstream_url",
    "upstream-api-key": "amp_upstream_api_key",
    "upstream-api-keys": "amp_upstream_api_keys",
    "restrict-management-to-localhost": "amp_restrict_management_to_localhost",
    "model-mappings": "amp_model_mappings",
    "force-model-mappings": "amp_force_model_mappings",
}


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key (and file:line)."""


def _kebab(name: str) -> str:
    return name.replace("_", "-")


class _ConfigModel(BaseModel):
    # An unknown key in an entry is an error: a typo there must not send traffic to Amp credits.
    model_config = ConfigDict(alias_generator=_kebab, populate_by_name=True, frozen=True, extra="forbid")

    @classmethod
    def known_keys(cls) -> list[str]:
        return [field.alias or name for name, field in cls.model_fields.items()]


def _validate_base_url(value: str, *, allow_empty: bool) -> str:
    value = value.strip()
    if not value and allow_empty:
        return ""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {value!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"must be a plain http(s) URL without credentials, query or fragment: {value!r}")
    return value.rstrip("/")


def _key_text(value: object) -> object:
    """Keys are trimmed: a copy-pasted ``"  sk-abc  "`` means ``sk-abc``."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value.strip() if isinstance(value, str) else value


def _check_key(value: SecretStr) -> SecretStr:
    problem = key_problem(value.get_secret_value())
    if problem:
        raise ValueError(problem)
    return value


def _drop_empty_keys(value: object) -> object:
    """Empty entries in a key list are ignored, as CLIProxyAPI did."""
    if isinstance(value, list):
        return [item for item in value if _key_text(item) != ""]
    return value


# A key goes into an HTTP header: trimmed, no inner whitespace or control characters, never shown.
Key = Annotated[SecretStr, BeforeValidator(_key_text), AfterValidator(_check_key)]
KeyList = Annotated[list[Key], BeforeValidator(_drop_empty_keys)]


class ModelMapping(_ConfigModel):
    """Serve model ``source`` with the local model ``target`` (``from``/``to`` in YAML)."""

    source: str = Field(alias="from", min_length=1)
    target: str = Field(alias="to", min_length=1)
    regex: bool = False

    @model_validator(mode="after")
    def _check_regex(self) -> ModelMapping:
        if self.regex:
            try:
                re.compile(self.source)
            except re.error as error:
                raise ValueError(f"invalid regex {self.source!r}: {error}") from None
        return self


class UpstreamKeyMapping(_ConfigModel):
    """Clients that authenticate with one of ``api_keys`` use ``upstream_api_key`` upstream."""

    upstream_api_key: Key
    api_keys: KeyList = Field(min_length=1)


class ProviderConfig(_ConfigModel):
    """A local backend of the standalone app."""

    name: str = Field(min_length=1)
    type: Literal["anthropic", "openai", "google"]
    base_url: str
    api_key: Key = SecretStr("")
    models: list[str] | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    proxy_url: str = ""  # overrides the global proxy-url for this backend ("direct": none)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return _validate_base_url(value, allow_empty=False)

    @field_validator("proxy_url")
    @classmethod
    def _check_proxy_url(cls, value: str) -> str:
        return check_proxy_url(value)


class Settings(BaseSettings):
    """Every setting of ampbridge. Secrets are ``SecretStr``: no repr or log shows them."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8317, ge=0, le=65535)
    debug: bool = False
    logging_to_file: bool = False
    amp_upstream_url: str = DEFAULT_UPSTREAM
    amp_upstream_api_key: Key = SecretStr("")
    amp_upstream_api_keys: list[UpstreamKeyMapping] = Field(default_factory=list)
    amp_restrict_management_to_localhost: bool = True
    amp_model_mappings: list[ModelMapping] = Field(default_factory=list)
    amp_force_model_mappings: bool = False
    api_keys: KeyList = Field(default_factory=list)
    max_body_size: int = Field(64 * 1024 * 1024, gt=0)
    providers: list[ProviderConfig] = Field(default_factory=list)
    # "never": a model call no local backend serves gets an error instead of Amp credits.
    amp_fallback: Literal["allowed", "never"] = "allowed"
    # Extra Host names ampbridge answers to (a tunnel's hostname; "*.example.com" for a suffix).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Extra browser origins allowed to call ampbridge ("https://tool.example.com").
    allowed_origins: list[str] = Field(default_factory=list)
    # Browser routes (/auth, /threads, ...): "redirect" to the upstream's own site, or "proxy".
    browser_routes: Literal["redirect", "proxy"] = "redirect"
    # The public routing token Amp's cloud actor gateway wants (found in the installed CLI if empty).
    amp_actor_routing_token: Key = SecretStr("")
    # Outbound proxy for every connection ampbridge makes ("direct"/"none": no proxy at all;
    # empty: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment).
    proxy_url: str = ""
    # Days of model calls the usage ledger keeps (0: keep everything).
    usage_retention_days: int = Field(90, ge=0)
    # ampbridge serve: most connections at once, and how long a request head may take to arrive.
    max_connections: int = Field(1000, gt=0)
    header_timeout: float = Field(30.0, gt=0)

    @field_validator("amp_upstream_url")
    @classmethod
    def _check_upstream_url(cls, value: str) -> str:
        return _validate_base_url(value, allow_empty=True)

    @field_validator("proxy_url")
    @classmethod
    def _check_proxy_url(cls, value: str) -> str:
        return check_proxy_url(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, EnvironmentSource(settings_cls, os.environ)

    @property
    def client_keys(self) -> frozenset[str]:
        return frozenset(key.get_secret_value() for key in self.api_keys)


FLAT_KEYS = {_kebab(name): name for name in Settings.model_fields}


class EnvironmentSource(PydanticBaseSettingsSource):
    """``AMPBRIDGE_*`` variables from a mapping (the process environment at the app's edge, or
    whatever ``load_settings(environ=...)`` was given). Lists and mappings are JSON."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = env_name(field_name)
        return self.environ.get(name), name, self.field_is_complex(field)

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name, info in self.settings_cls.model_fields.items():
            raw, name, complex_value = self.get_field_value(info, field_name)
            if raw is None:
                continue
            if complex_value:
                try:
                    raw = json.loads(raw)
                except ValueError as error:
                    raise ConfigError(f"environment {name}: not valid JSON ({error})") from None
            values[field_name] = raw
        return values


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


# --- the YAML file ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigDocument:
    """A parsed config file: values by field name, and where each YAML path was written."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)
    key_paths: dict[str, tuple[str, ...]] = field(default_factory=dict)  # field -> YAML path
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)  # YAML path -> line
    unknown_keys: tuple[str, ...] = ()

    def locate(self, loc: tuple[Any, ...]) -> str:
        """``file:line: yaml.key[0].sub`` for a validation error location."""
        field_name, rest = str(loc[0]), tuple(loc[1:])
        yaml_path = self.key_paths.get(field_name, (_kebab(field_name),)) + rest
        line = next(
            (self.lines[yaml_path[:n]] for n in range(len(yaml_path), 0, -1) if yaml_path[:n] in self.lines),
            None,
        )
        where = f"{self.path}:{line}" if line else str(self.path)
        return f"{where}: {_dotted(yaml_path)}"


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _node_lines(node: yaml.Node, prefix: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, key_node.value)
            lines[path] = key_node.start_mark.line + 1
            _node_lines(value_node, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            path = (*prefix, index)
            lines[path] = item.start_mark.line + 1
            _node_lines(item, path, lines)


def read_config_file(path: Path) -> ConfigDocument:
    """Parse a config file into field values; conflicting flat and nested keys are an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file: {error.strerror or error}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(error, 'problem', error)}") from None
    if data is None:
        return ConfigDocument(path=path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    lines: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _node_lines(root, (), lines)

    values: dict[str, Any] = {}
    key_paths: dict[str, tuple[str, ...]] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key in FLAT_KEYS:
            values[FLAT_KEYS[key]] = value
            key_paths[FLAT_KEYS[key]] = (key,)
        elif key != NESTED_BLOCK:
            unknown.append(str(key))
    nested = data.get(NESTED_BLOCK)
    if nested is not None and not isinstance(nested, dict):
        raise ConfigError(f"{path}:{lines.get((NESTED_BLOCK,), '?')}: {NESTED_BLOCK} must be a mapping")
    for key, value in (nested or {}).items():
        name = NESTED_KEYS.get(key)
        if name is None:
            unknown.append(f"{NESTED_BLOCK}.{key}")
            continue
        if name in values and values[name] != value:
            flat_key = key_paths[name][0]
            raise ConfigError(
                f"{path}:{lines.get((NESTED_BLOCK, key), '?')}: {NESTED_BLOCK}.{key} and "
                f"{flat_key} (line {lines.get((flat_key,), '?')}) give different values; keep one"
            )
        values.setdefault(name, value)
        key_paths.setdefault(name, (NESTED_BLOCK, key))
    return ConfigDocument(path, values, key_paths, lines, tuple(unknown))


class ConfigFileSource(PydanticBaseSettingsSource):
    """Feeds a ``ConfigDocument`` to pydantic-settings, below the environment."""

    def __init__(self, settings_cls: type[BaseSettings], document: ConfigDocument) -> None:
        super().__init__(settings_cls)
        self.document = document

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.document.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.document.values)


def find_config_file(explicit: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Path | None:
    """``--config`` / ``AMPBRIDGE_CONFIG``, else ``./config.yaml``, else the user config dir."""
    chosen = explicit or environ.get(CONFIG_ENV)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    for candidate in (
        Path.cwd() / CONFIG_FILENAME,
        platformdirs.user_config_path("ampbridge") / CONFIG_FILENAME,
    ):
        if candidate.is_file():
            return candidate
    return None


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from arguments, the environment and the config file, or raise ConfigError."""
    environ = os.environ if environ is None else environ
    path = find_config_file(config_path, environ)
    document = read_config_file(path) if path else ConfigDocument()
    if document.unknown_keys:
        logger.warning("%s: ignoring keys ampbridge does not use: %s", path, ", ".join(document.unknown_keys))
    return settings_from(document, environ=environ, **overrides)


def settings_from(
    document: ConfigDocument, *, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings with ``document`` as the file layer (below the environment and ``overrides``)."""
    environ = os.environ if environ is None else environ

    class FileBackedSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                EnvironmentSource(settings_cls, environ),
                ConfigFileSource(settings_cls, document),
            )

    try:
        return FileBackedSettings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error, document, overrides, environ)) from None


def _describe(
    error: ValidationError, document: ConfigDocument, overrides: Mapping[str, Any], environ: Mapping[str, str]
) -> str:
    problems = []
    for item in error.errors():
        loc = item["loc"]
        name = str(loc[0]) if loc else "?"
        if name in overrides:
            where = f"argument {name}"
        elif env_name(name) in environ:
            where = f"environment {env_name(name)}"
        elif name in document.values:
            where = document.locate(tuple(loc))
        else:
            where = name
        message = item["msg"]
        if item["type"] == "extra_forbidden" and loc:
            message = unknown_key_message(str(loc[-1]), _entry_keys(name))
        problems.append(f"{where}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(problems)


def _entry_keys(field_name: str) -> list[str]:
    """The keys an entry of list setting ``field_name`` may have."""
    entry = {
        "providers": ProviderConfig,
        "amp_model_mappings": ModelMapping,
        "amp_upstream_api_keys": UpstreamKeyMapping,
    }.get(field_name)
    return entry.known_keys() if entry else list(FLAT_KEYS)


def unknown_key_message(key: str, known: list[str]) -> str:
    """``unknown key 'api-kye' (did you mean 'api-key'?)``."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
    return f"unknown key '{key}'{hint}"
