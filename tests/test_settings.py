"""Settings: file + environment + arguments; CLIProxyAPI files work unchanged; errors name keys."""

from __future__ import annotations

import asyncio
import logging
import socket
import textwrap

import pytest

from ampbridge.secrets import UpstreamKeyResolver
from ampbridge.settings import ConfigError, OnceOnly, load_settings, startup_warnings, warn_once

CLIPROXYAPI_CONFIG = """\
port: 8317
auth-dir: "~/.cli-proxy-api"
remote-management:
  allow-remote: false
  secret-key: ""
debug: false
logging-to-file: false
api-keys:
  - "client-key-1"
request-retry: 3
quota-exceeded:
  switch-project: true
gemini-api-key:
  - api-key: "AIza-not-ours"
ampcode:
  upstream-url: "http://127.0.0.1:9"
  upstream-api-key: "amp-key-from-ampcode-block"
  restrict-management-to-localhost: true
  model-mappings:
    - from: "claude-opus-4-7"
      to: "claude-sonnet-4-5"
    - from: "^gpt-5.*$"
      to: "gpt-5-mini"
      regex: true
  force-model-mappings: true
"""


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_without_any_file():
    settings = load_settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 8317)
    assert settings.amp_upstream_url == "https://ampcode.com"
    assert settings.amp_restrict_management_to_localhost is True
    assert settings.max_body_size == 64 * 1024 * 1024


def test_cliproxyapi_file_is_accepted_and_its_unimplemented_settings_listed_once(tmp_path, caplog):
    path = write(tmp_path, CLIPROXYAPI_CONFIG)
    with caplog.at_level(logging.WARNING, logger="ampbridge.settings"):
        settings = load_settings(path)
        load_settings(path)  # ampbridge serve reads it twice: banner, then the app
    assert settings.amp_upstream_url == "http://127.0.0.1:9"
    assert settings.amp_upstream_api_key.get_secret_value() == "amp-key-from-ampcode-block"
    assert [(m.source, m.target, m.regex) for m in settings.amp_model_mappings] == [
        ("claude-opus-4-7", "claude-sonnet-4-5", False),
        ("^gpt-5.*$", "gpt-5-mini", True),
    ]
    assert settings.amp_force_model_mappings is True
    assert settings.client_keys == frozenset({"client-key-1"})
    assert [p.name for p in settings.providers] == ["gemini-api-key[1]"]
    (warning,) = [r.getMessage() for r in caplog.records]
    for key in ("auth-dir", "request-retry", "quota-exceeded"):
        assert f"\n  {key}: " in warning
    # off there too (an empty secret key disabled the management API): nothing to say
    assert "remote-management" not in warning


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "providers:\n  - name: a\n    type: openai\n    base-url: http://127.0.0.1:1\n    api-kye: k\n",
            "providers[0].api-kye: unknown key 'api-kye' (did you mean 'api-key'?)",
        ),
        (
            "providers:\n  - name: a\n    type: openai\n    base-url: http://127.0.0.1:1\n"
            "    models: [{name: m, alais: x}]\n",
            "unknown key 'alais' (did you mean 'alias'?)",
        ),
        ("amp-model-mappings:\n  - from: a\n    too: b\n", "unknown key 'too' (did you mean 'to'?)"),
    ],
)
def test_unknown_keys_in_entries_stop_startup_with_a_suggestion(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert expected in str(error.value)


def test_unknown_top_level_keys_get_a_suggestion_once(tmp_path, caplog):
    path = write(tmp_path, "port: 1\napi-kyes: [k]\nclaude-api-keys: []\nampcode:\n  upstream-ulr: x\n")
    with caplog.at_level(logging.WARNING, logger="ampbridge.settings"):
        load_settings(path)
        load_settings(path)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:2: unknown key 'api-kyes' (did you mean 'api-keys'?); ignored",
        f"{path}:3: unknown key 'claude-api-keys' (did you mean 'claude-api-key'?); ignored",
        f"{path}:5: ampcode: unknown key 'upstream-ulr' (did you mean 'upstream-url'?); ignored",
    ]


def test_list_in_an_environment_variable_that_is_not_json_names_it(monkeypatch):
    monkeypatch.setenv("AMPBRIDGE_API_KEYS", "k1,k2")
    with pytest.raises(ConfigError, match="environment AMPBRIDGE_API_KEYS: not valid JSON"):
        load_settings()


@pytest.mark.parametrize(
    ("host", "bind", "beyond"),
    [
        ("", "", True),
        ("127.0.0.1", "127.0.0.1", False),
        ("127.0.0.2", "127.0.0.2", False),
        ("localhost", "localhost", False),
        ("[::1]", "::1", False),
        ("0.0.0.0", "0.0.0.0", True),
        ("192.168.1.5", "192.168.1.5", True),
    ],
)
def test_bind_host(tmp_path, host, bind, beyond):
    settings = load_settings(write(tmp_path, f'host: "{host}"\n'))
    assert settings.host == host
    assert (settings.bind_host, settings.binds_beyond_loopback) == (bind, beyond)


def test_all_interfaces_without_client_keys_warns_loudly(tmp_path):
    bare = load_settings(write(tmp_path, 'host: ""\nport: 8317\n'))
    (warning,) = startup_warnings(bare)
    assert "NOT PROTECTED" in warning and "all interfaces (IPv4 and IPv6)" in warning
    assert startup_warnings(load_settings(write(tmp_path, 'host: ""\napi-keys: [k]\n'))) == []
    assert startup_warnings(load_settings(write(tmp_path, "host: 127.0.0.1\n"))) == []


def test_all_interfaces_really_means_ipv4_and_ipv6(tmp_path):
    """uvicorn gets ``bind_host``; asyncio binds every address family for "" (dual stack)."""
    settings = load_settings(write(tmp_path, 'host: ""\nport: 0\n'))

    async def families() -> set[int]:
        server = await asyncio.get_running_loop().create_server(
            asyncio.Protocol, host=settings.bind_host, port=settings.port
        )
        try:
            return {sock.family for sock in server.sockets}
        finally:
            server.close()

    expected = {socket.AF_INET, socket.AF_INET6} if socket.has_ipv6 else {socket.AF_INET}
    assert asyncio.run(families()) == expected


def test_warn_once_forgets_the_least_recent_past_its_limit(caplog):
    once = OnceOnly(limit=2)
    with caplog.at_level(logging.WARNING, logger="ampbridge.settings"):
        results = [warn_once(m, once=once) for m in ("a", "b", "a", "c", "b", "a")]
    # "a" was seen again before "c" came, so "b" was the one forgotten
    assert results == [True, True, False, True, True, True]
    assert [r.getMessage() for r in caplog.records] == ["a", "b", "c", "b", "a"]


def test_flat_keys_from_the_guide(tmp_path):
    path = write(
        tmp_path,
        """\
        amp-upstream-url: "http://127.0.0.1:9/"
        amp-restrict-management-to-localhost: false
        amp-model-mappings: [{from: a, to: b}]
        max-body-size: 1000
    """,
    )
    settings = load_settings(path)
    assert settings.amp_upstream_url == "http://127.0.0.1:9"  # trailing slash normalised
    assert settings.amp_restrict_management_to_localhost is False
    assert settings.amp_model_mappings[0].target == "b"
    assert settings.max_body_size == 1000


def test_equal_flat_and_nested_values_are_fine_but_different_ones_stop_startup(tmp_path):
    same = write(
        tmp_path, "amp-upstream-url: http://127.0.0.1:9\nampcode:\n  upstream-url: http://127.0.0.1:9\n"
    )
    assert load_settings(same).amp_upstream_url == "http://127.0.0.1:9"
    different = write(
        tmp_path, "amp-upstream-url: http://127.0.0.1:9\nampcode:\n  upstream-url: http://127.0.0.1:8\n"
    )
    with pytest.raises(ConfigError) as error:
        load_settings(different)
    assert "ampcode.upstream-url" in str(error.value)
    assert "amp-upstream-url" in str(error.value)
    assert f"{different}:3" in str(error.value)


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("port: eighty\n", "port", 1),
        ("debug: false\namp-upstream-url: ftp://nope\n", "amp-upstream-url", 2),
        (
            "ampcode:\n  model-mappings:\n    - from: '(['\n      to: x\n      regex: true\n",
            "ampcode.model-mappings[0]",
            3,
        ),
        (
            "providers:\n  - name: a\n    type: cohere\n    base-url: http://127.0.0.1:1\n",
            "providers[0].type",
            3,
        ),
        ("providers:\n  - name: a\n    type: openai\n    base-url: not a url\n", "providers[0].base-url", 4),
    ],
)
def test_bad_values_name_the_key_file_and_line(tmp_path, text, key, line):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert f"{path}:{line}: {key}" in str(error.value)


def test_broken_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "port: 1\nproviders: [\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: not valid YAML"):
        load_settings(path)


def test_environment_beats_the_file_and_arguments_beat_both(tmp_path, monkeypatch):
    path = write(tmp_path, "port: 1000\ndebug: false\n")
    monkeypatch.setenv("AMPBRIDGE_PORT", "2000")
    monkeypatch.setenv("AMPBRIDGE_AMP_UPSTREAM_URL", "http://127.0.0.1:7")
    settings = load_settings(path, port=3000)
    assert settings.port == 3000
    assert settings.amp_upstream_url == "http://127.0.0.1:7"
    assert load_settings(path).port == 2000


def test_config_file_discovery(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text("port: 1111\n")
    assert load_settings().port == 1111
    other = tmp_path / "other.yaml"
    other.write_text("port: 2222\n")
    monkeypatch.setenv("AMPBRIDGE_CONFIG", str(other))
    assert load_settings().port == 2222
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")


def test_user_config_dir_is_the_last_resort(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "ampbridge").mkdir(parents=True)
    (tmp_path / "xdg" / "ampbridge" / "config.yaml").write_text("port: 3333\n")
    assert load_settings().port == 3333


def test_no_secret_in_repr_or_str(tmp_path):
    path = write(
        tmp_path,
        """\
        amp-upstream-api-key: upstream-secret
        api-keys: [client-secret]
        amp-upstream-api-keys: [{upstream-api-key: per-client-secret, api-keys: [mapped-client-secret]}]
        providers:
          - name: p
            type: openai
            base-url: "http://127.0.0.1:1"
            api-key: backend-secret
            headers: {X-Token: header-secret}
    """,
    )
    settings = load_settings(path)
    shown = repr(settings) + str(settings) + repr(settings.providers) + repr(settings.model_dump())
    for secret in (
        "upstream-secret",
        "client-secret",
        "per-client-secret",
        "mapped-client-secret",
        "backend-secret",
        "header-secret",
    ):
        assert secret not in shown
    resolver = UpstreamKeyResolver(
        configured_key="upstream-secret", per_client={"client-secret": "per-client-secret"}
    )
    assert "secret" not in repr(resolver).replace("secrets_file", "")
