"""Settings: constructor arguments > ``AMPBRIDGE_*`` environment > YAML file > defaults.

The YAML file accepts the flat keys (``amp-upstream-url``) and CLIProxyAPI's nested ``ampcode:``
block (``upstream-url``), and CLIProxyAPI's provider sections become providers after ampbridge's
own (``cliproxy.py``), so an existing CLIProxyAPI ``config.yaml`` works unchanged. CLIProxyAPI keys
ampbridge does not implement are listed once with advice; other unknown top-level keys are
warned about with a did-you-mean. Errors name the key and, for the file, the line.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .cliproxy import (
    CLIPROXY_KEYS,
    Imported,
    ImportedProvider,
    SectionError,
    import_sections,
    unknown_key_message,
)
from .credentials import key_problem
from .http_client import check_proxy_url
from .user_dirs import user_config_dir

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
# An outbound proxy: "", "direct"/"none", or an http(s)/socks5 URL (never shown: it may hold a password).
ProxyUrl = Annotated[str, AfterValidator(check_proxy_url)]


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


ProviderType = Literal["anthropic", "openai", "google", "chatgpt"]
AuthHeader = Literal["x-api-key", "bearer", "x-goog-api-key"]

# Where a provider is when its entry gives no base-url (openai has no default: say which server).
DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "google": "https://generativelanguage.googleapis.com",
    "vertex": "https://aiplatform.googleapis.com",
    "chatgpt": "https://chatgpt.com/backend-api/codex",
}
DEFAULT_AUTH_URL = "https://auth.openai.com"


class ModelAlias(_ConfigModel):
    """A model sent to the backend as ``name`` that clients ask for as ``alias`` (empty: the
    name). Several entries with one alias make a pool, used in turn."""

    name: str = Field(min_length=1)
    alias: str = ""

    @property
    def client_name(self) -> str:
        return self.alias or self.name


# A model entry: a name or glob served under its own name, or a name/alias pair.
ModelEntry = Annotated[str, Field(min_length=1)] | ModelAlias


class ProviderConfig(_ConfigModel):
    """A local backend of the standalone app."""

    name: str = Field(min_length=1)
    type: ProviderType
    base_url: str = ""  # empty: the type's default (DEFAULT_BASE_URLS); openai needs one
    api_key: Key = SecretStr("")
    api_keys: KeyList = Field(default_factory=list)  # more keys, used in turn with api-key
    # How the key is sent; default: x-api-key (anthropic), bearer (openai), x-goog-api-key (google).
    auth_header: AuthHeader | None = None
    # type openai: the endpoints it speaks (chat/completions, responses, or both).
    api_format: Literal["chat-completions", "responses", "both"] = "both"
    # type google: Gemini API paths, or Vertex-style publishers/google/models paths.
    path_style: Literal["gemini", "vertex"] = "gemini"
    # Whether base-url already ends in the API version (requests add only /chat/completions,
    # /responses...). Default: when it ends in /v1 (openai, chatgpt), else no.
    base_url_includes_version: bool | None = None
    models: list[ModelEntry] | None = None
    excluded_models: list[str] = Field(default_factory=list)  # names or globs never served
    prefix: str = ""  # models are also addressed as "{prefix}/{model}"
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    proxy_url: ProxyUrl = ""  # overrides the global proxy-url for this backend ("direct": none)
    # type chatgpt: which stored logins to use (None: all), and OpenAI's auth server.
    accounts: list[str] | None = None
    auth_url: str = DEFAULT_AUTH_URL

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return _validate_base_url(value, allow_empty=True)

    @field_validator("auth_url")
    @classmethod
    def _check_auth_url(cls, value: str) -> str:
        return _validate_base_url(value, allow_empty=False)

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.strip().strip("/")
        if "/" in value:
            raise ValueError(f"a prefix is one path segment, without '/' inside: {value!r}")
        return value

    @model_validator(mode="after")
    def _check_type_keys(self) -> ProviderConfig:
        only_for = {
            "api_format": ("openai",),
            "path_style": ("google",),
            "accounts": ("chatgpt",),
            "auth_url": ("chatgpt",),
            "api_key": ("anthropic", "openai", "google"),
            "api_keys": ("anthropic", "openai", "google"),
            "auth_header": ("anthropic", "openai", "google"),
        }
        for field_name, types in only_for.items():
            if field_name in self.model_fields_set and self.type not in types:
                key = _kebab(field_name)
                raise ValueError(f"{key} does not apply to type {self.type} (only to {', '.join(types)})")
        if self.base_url:
            return self
        default = DEFAULT_BASE_URLS.get("vertex" if self.path_style == "vertex" else self.type)
        if default is None:
            raise ValueError(
                f"type {self.type} needs a base-url (the server's root, e.g. https://api.openai.com/v1)"
            )
        return self.model_copy(update={"base_url": default})

    @property
    def keys(self) -> list[str]:
        """``api-key`` and ``api-keys``, in that order, each once."""
        keys = [key.get_secret_value() for key in (self.api_key, *self.api_keys)]
        return list(dict.fromkeys(key for key in keys if key))


class Settings(BaseSettings):
    """Every setting of ampbridge. Secrets are ``SecretStr``: no repr or log shows them."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    host: str = "127.0.0.1"  # "": every interface, IPv4 and IPv6 (as in CLIProxyAPI)
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
    proxy_url: ProxyUrl = ""
    # Days of model calls the usage ledger keeps (0: keep everything).
    usage_retention_days: int = Field(90, ge=0)
    # ampbridge serve: most connections at once, and how long a request head may take to arrive.
    max_connections: int = Field(1000, gt=0)
    header_timeout: float = Field(30.0, gt=0)

    @field_validator("amp_upstream_url")
    @classmethod
    def _check_upstream_url(cls, value: str) -> str:
        return _validate_base_url(value, allow_empty=True)

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

    # What the config file held besides the settings: the CLIProxyAPI sections it was read
    # from, and its warnings (set by ``settings_from``; empty for settings built directly).
    _imported: Imported = PrivateAttr(default_factory=Imported)
    _file_warnings: tuple[str, ...] = PrivateAttr(default=())

    @property
    def client_keys(self) -> frozenset[str]:
        return frozenset(key.get_secret_value() for key in self.api_keys)

    @property
    def bind_host(self) -> str:
        """What to give uvicorn as ``host``. ``""`` stays ``""``: asyncio then opens one socket
        per address family on every interface (IPv4 and IPv6), the dual-stack bind CLIProxyAPI
        made; ``"::"`` would be IPv6 only (asyncio sets IPV6_V6ONLY) and ``"0.0.0.0"`` IPv4 only.
        ``[::1]`` is unbracketed."""
        host = self.host.strip()
        return host[1:-1] if host.startswith("[") and host.endswith("]") else host

    @property
    def bind_description(self) -> str:
        """The real bind address as a user reads it: ``http://0.0.0.0:8317 (all IPv4 interfaces)``."""
        host, port = self.bind_host, self.port
        if not host:
            return f"port {port} on all interfaces (IPv4 and IPv6)"
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        if host == "0.0.0.0":
            return f"{url} (all IPv4 interfaces)"
        if host == "::":
            return f"{url} (all interfaces)"
        return url

    @property
    def binds_beyond_loopback(self) -> bool:
        """Whether other machines may reach the server (any bind but 127.0.0.0/8, ::1, localhost)."""
        host = self.bind_host
        if host.lower() == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True  # "", a hostname, or an interface name: assume reachable

    @property
    def imported(self) -> Imported:
        """The CLIProxyAPI sections read from the config file: which provider came from which
        entry, entries skipped, top-level keys not taken."""
        return self._imported

    @property
    def file_warnings(self) -> tuple[str, ...]:
        """Warnings about the config file (keys not taken, unknown keys, skipped entries)."""
        return self._file_warnings


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
    imported: Imported = field(default_factory=Imported)  # the CLIProxyAPI sections
    unknown_keys: tuple[str, ...] = ()  # neither ampbridge's nor CLIProxyAPI's

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
        elif key != NESTED_BLOCK and key not in CLIPROXY_KEYS:
            unknown.append(str(key))
    try:
        imported = import_sections(data)
    except SectionError as error:
        raise ConfigError(f"{path}:{lines.get(error.path, '?')}: {_dotted(error.path)}: {error}") from None
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
    return ConfigDocument(path, values, key_paths, lines, imported, tuple(unknown))


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
        user_config_dir("ampbridge", environ) / CONFIG_FILENAME,
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
    """Build settings from arguments, the environment and the config file, or raise ConfigError.
    The file's warnings are logged once per process (``warn_once``), however often it is read."""
    environ = os.environ if environ is None else environ
    path = find_config_file(config_path, environ)
    document = read_config_file(path) if path else ConfigDocument()
    settings = settings_from(document, environ=environ, **overrides)
    for message in settings.file_warnings:
        warn_once(message)
    return settings


def settings_from(
    document: ConfigDocument, *, environ: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings with ``document`` as the file layer (below the environment and ``overrides``);
    the providers read from its CLIProxyAPI sections come after the ``providers`` setting."""
    source_environ: Mapping[str, str] = os.environ if environ is None else environ

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
                EnvironmentSource(settings_cls, source_environ),
                ConfigFileSource(settings_cls, document),
            )

    try:
        settings: Settings = FileBackedSettings(**overrides)
    except ValidationError as error:
        raise ConfigError(_describe(error, document, overrides, source_environ)) from None
    imported = [_imported_provider(document, provider) for provider in document.imported.providers]
    if imported:
        settings = settings.model_copy(update={"providers": [*settings.providers, *imported]})
    settings._imported = document.imported
    settings._file_warnings = _file_warnings(document)
    return settings


def _imported_provider(document: ConfigDocument, provider: ImportedProvider) -> ProviderConfig:
    try:
        return ProviderConfig.model_validate(provider.entry)
    except ValidationError as error:
        source = provider.sources[0]
        problems = []
        for item in error.errors():
            key = item["loc"][0] if item["loc"] else None
            yaml_path = (*source, key) if (*source, key) in document.lines else source
            where = f"{document.path}:{document.lines.get(yaml_path, '?')}: {_dotted(yaml_path)}"
            problems.append(f"{where}: {item['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def _file_warnings(document: ConfigDocument) -> tuple[str, ...]:
    """One text per problem: unknown keys (with a did-you-mean), the CLIProxyAPI settings that
    are in effect but not implemented (with advice), entries skipped, values discarded."""
    path, imported = document.path, document.imported
    known = sorted({*FLAT_KEYS, NESTED_BLOCK, *CLIPROXY_KEYS})
    warnings = []
    for key in document.unknown_keys:
        if key.startswith(f"{NESTED_BLOCK}."):
            message = unknown_key_message(key.partition(".")[2], list(NESTED_KEYS))
            key_path: tuple[Any, ...] = (NESTED_BLOCK, key.partition(".")[2])
            warnings.append(f"{path}:{document.lines.get(key_path, '?')}: {NESTED_BLOCK}: {message}; ignored")
        else:
            message = unknown_key_message(key, known)
            warnings.append(f"{path}:{document.lines.get((key,), '?')}: {message}; ignored")
    not_implemented = [item for item in imported.not_taken if item.in_effect]
    if not_implemented:
        lines = "".join(f"\n  {item.key}: {item.advice}" for item in not_implemented)
        warnings.append(f"{path}: CLIProxyAPI settings ampbridge does not implement (ignored):{lines}")
    if imported.skipped:
        lines = "".join(f"\n  {label}: {why}" for label, why in imported.skipped)
        warnings.append(f"{path}: CLIProxyAPI entries not served:{lines}")
    warnings.extend(f"{path}: {problem}" for problem in imported.problems)
    return tuple(warnings)


def startup_warnings(settings: Settings) -> list[str]:
    """Every warning ``ampbridge serve`` gives at start-up: the config file's, and binding beyond
    loopback without client keys. Log each with ``warn_once`` (the file's are logged already by
    ``load_settings``; ``warn_once`` skips them)."""
    warnings = list(settings.file_warnings)
    if settings.binds_beyond_loopback and not settings.api_keys:
        warnings.append(
            f"NOT PROTECTED: ampbridge listens on {settings.bind_description}, beyond this machine, "
            "and `api-keys` is empty: anyone who can reach this port can use your Amp account and "
            "provider keys. Set `api-keys` (clients then send one), or bind to 127.0.0.1."
        )
    return warnings


class OnceOnly:
    """Remembers which messages were given, so each is given once; the oldest are forgotten
    past ``limit`` (a process that reloads its config for months keeps a bounded set)."""

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self.given: OrderedDict[str, None] = OrderedDict()

    def first_time(self, message: str) -> bool:
        if message in self.given:
            self.given.move_to_end(message)
            return False
        self.given[message] = None
        if len(self.given) > self.limit:
            self.given.popitem(last=False)
        return True


_WARNED = OnceOnly()


def warn_once(message: str, *, log: logging.Logger = logger, once: OnceOnly = _WARNED) -> bool:
    """Log ``message`` as a warning unless this process already did; True when logged.
    (``ampbridge serve`` reads the config for its banner and again when the app starts.)"""
    if not once.first_time(message):
        return False
    log.warning("%s", message)
    return True


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
            message = unknown_key_message(str(loc[-1]), _entry_keys(tuple(loc)))
        problems.append(f"{where}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(problems)


def _entry_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the entry at validation location ``loc`` may have."""
    entries: dict[str, type[_ConfigModel]] = {
        "providers": ProviderConfig,
        "amp_model_mappings": ModelMapping,
        "amp_upstream_api_keys": UpstreamKeyMapping,
    }
    entry = entries.get(str(loc[0]))
    if entry is ProviderConfig and "models" in loc:
        entry = ModelAlias
    return entry.known_keys() if entry else list(FLAT_KEYS)
