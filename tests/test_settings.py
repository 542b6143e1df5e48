"""Settings: file + environment + arguments; CLIProxyAPI files work unchanged; errors name keys."""

from __future__ import annotations

import logging
import textwrap

import pytest

from ampbridge.secrets import UpstreamKeyResolver
from ampbridge.settings import ConfigError, load_settings

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


def test_cliproxyapi_file_is_accepted_and_unknown_keys_only_warned(tmp_path, caplog):
    path = write(tmp_path, CLIPROXYAPI_CONFIG)
    with caplog.at_level(logging.WARNING, logger="ampbridge.settings"):
        settings = load_settings(path)
    assert settings.amp_upstream_url == "http://127.0.0.1:9"
    assert settings.amp_upstream_api_key.get_secret_value() == "amp-key-from-ampcode-block"
    assert [(m.source, m.target, m.regex) for m in settings.amp_model_mappings] == [
        ("claude-opus-4-7", "claude-sonnet-4-5", False),
        ("^gpt-5.*$", "gpt-5-mini", True),
    ]
    assert settings.amp_force_model_mappings is True
    assert settings.client_keys == frozenset({"client-key-1"})
    (warning,) = [r.getMessage() for r in caplog.records]
    for key in ("auth-dir", "remote-management", "request-retry", "quota-exceeded", "gemini-api-key"):
        assert key in warning


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
