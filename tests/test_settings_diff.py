"""What a reload changed: one line per changed setting, in YAML spelling, never a key's value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, SecretStr

from ampbridge.settings import Settings, load_settings
from ampbridge.settings_diff import describe_changes

KEYS = [
    "sk-old-upstream-1234",
    "sk-new-upstream-5678",
    "client-key-aaaa",
    "client-key-bbbb",
    "client-key-cccc",
]


def settings(tmp_path: Path, document: dict[str, Any]) -> Settings:
    """Settings read from a YAML file, as ``ampbridge serve`` and its reload read them."""
    path = tmp_path / f"config-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(document))
    return load_settings(path, environ={})


BASE: dict[str, Any] = {
    "amp-upstream-url": "https://a.example",
    "amp-upstream-api-key": KEYS[0],
    "api-keys": [KEYS[2], KEYS[3]],
    "amp-model-mappings": [{"from": "claude-x", "to": "local-a"}, {"from": "gpt-y", "to": "local-b"}],
    "providers": [
        {"name": "ollama", "type": "openai", "base-url": "http://127.0.0.1:11434/v1", "api-key": "ollama-key"}
    ],
}


def changed(tmp_path: Path, **edits: Any) -> list[str]:
    new = {**BASE, **{key.replace("_", "-"): value for key, value in edits.items()}}
    return describe_changes(settings(tmp_path, BASE), settings(tmp_path, new))


def test_url_key_and_mapping_changes_are_exactly_three_lines_without_key_values(tmp_path):
    lines = changed(
        tmp_path,
        amp_upstream_url="https://b.example",
        amp_upstream_api_key=KEYS[1],
        amp_model_mappings=[*BASE["amp-model-mappings"], {"from": "gemini-z", "to": "local-a"}],
    )
    assert lines == [
        "amp-upstream-url: https://a.example -> https://b.example",
        "amp-upstream-api-key: updated",
        "amp-model-mappings: 2 -> 3",
    ]
    assert not any(key in line for line in lines for key in KEYS)


def test_nothing_changed_says_nothing(tmp_path):
    assert changed(tmp_path) == []


def test_a_flipped_boolean_is_shown_both_ways(tmp_path):
    assert changed(tmp_path, debug=True, amp_restrict_management_to_localhost=False) == [
        "debug: false -> true",
        "amp-restrict-management-to-localhost: true -> false",
    ]


def test_an_upstream_key_appearing_is_added_and_disappearing_is_removed(tmp_path):
    without = {key: value for key, value in BASE.items() if key != "amp-upstream-api-key"}
    old, new = settings(tmp_path, without), settings(tmp_path, BASE)
    assert describe_changes(old, new) == ["amp-upstream-api-key: added"]
    assert describe_changes(new, old) == ["amp-upstream-api-key: removed"]


def test_client_key_lists_are_counted_not_shown(tmp_path):
    assert changed(tmp_path, api_keys=[KEYS[2], KEYS[4]]) == ["api-keys: 1 updated"]
    assert changed(tmp_path, api_keys=[KEYS[2], KEYS[3], KEYS[4]]) == ["api-keys: 1 added"]
    assert changed(tmp_path, api_keys=[KEYS[3]]) == ["api-keys: 1 removed"]
    assert changed(tmp_path, api_keys=[KEYS[3], KEYS[2]]) == ["api-keys: reordered"]


def test_per_client_upstream_keys_are_counted_not_shown(tmp_path):
    before = {**BASE, "amp-upstream-api-keys": [{"upstream-api-key": KEYS[0], "api-keys": [KEYS[2]]}]}
    after = {**BASE, "amp-upstream-api-keys": [{"upstream-api-key": KEYS[1], "api-keys": [KEYS[2]]}]}
    lines = describe_changes(settings(tmp_path, before), settings(tmp_path, after))
    assert lines == ["amp-upstream-api-keys: 1 updated"]


def test_a_provider_key_change_is_named_by_provider_and_not_shown(tmp_path):
    provider = {**BASE["providers"][0], "api-key": "ollama-key-2"}
    lines = changed(tmp_path, providers=[provider])
    assert lines == ["providers[ollama].api-key: updated"]


def test_a_provider_header_secret_is_not_shown(tmp_path):
    provider = {**BASE["providers"][0], "headers": {"X-Secret": "hidden-value"}}
    lines = changed(tmp_path, providers=[provider])
    assert lines == ["providers[ollama].headers.X-Secret: added"]


def test_providers_are_counted_and_named_when_added_or_removed(tmp_path):
    lmstudio = {"name": "lmstudio", "type": "openai", "base-url": "http://127.0.0.1:1234/v1"}
    assert changed(tmp_path, providers=[*BASE["providers"], lmstudio]) == [
        "providers: 1 -> 2 (added lmstudio)"
    ]
    assert changed(tmp_path, providers=[lmstudio]) == ["providers: 1 -> 1 (added lmstudio; removed ollama)"]


def test_a_provider_setting_is_shown_old_and_new(tmp_path):
    provider = {**BASE["providers"][0], "base-url": "http://127.0.0.1:11435/v1", "models": ["qwen3"]}
    assert changed(tmp_path, providers=[provider]) == [
        "providers[ollama].base-url: http://127.0.0.1:11434/v1 -> http://127.0.0.1:11435/v1",
        'providers[ollama].models: null -> ["qwen3"]',
    ]


def test_a_changed_mapping_keeps_the_count_and_says_so(tmp_path):
    mappings = [BASE["amp-model-mappings"][0], {"from": "gpt-y", "to": "local-a"}]
    assert changed(tmp_path, amp_model_mappings=mappings) == ["amp-model-mappings: 2 -> 2 (1 updated)"]


def test_a_setting_added_to_the_model_later_is_covered_and_its_secret_kept():
    class Extended(Settings):
        proxy_url: str = ""
        session_token: SecretStr = SecretStr("")
        tokens_by_host: dict[str, list[SecretStr]] = Field(default_factory=dict)

    old = Extended(tokens_by_host={"a": [SecretStr("token-one")]})
    new = Extended(
        proxy_url="http://127.0.0.1:3128",
        session_token=SecretStr("token-two"),
        tokens_by_host={"a": [SecretStr("token-three")]},
    )
    lines = describe_changes(old, new)
    assert lines == [
        'proxy-url: "" -> http://127.0.0.1:3128',
        "session-token: added",
        "tokens-by-host.a: 1 updated",
    ]
    assert not any("token-" in line for line in lines)


def test_control_characters_in_a_shown_value_cannot_forge_a_log_line():
    old, new = Settings(host="127.0.0.1"), Settings(host="127.0.0.1\nfake: line")
    assert describe_changes(old, new) == ["host: 127.0.0.1 -> 127.0.0.1\\nfake: line"]
