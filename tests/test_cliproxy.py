"""CLIProxyAPI sections as providers, and one backend's aliases, pools, exclusions and keys."""

from __future__ import annotations

import textwrap

import pytest

from ampbridge.backend import Backend
from ampbridge.cliproxy import import_sections
from ampbridge.model_table import describe_lines, describe_models
from ampbridge.routes import Endpoint
from ampbridge.settings import ConfigError, ProviderConfig, load_settings

from .servers import FIXTURES

CLIPROXY_FIXTURE = FIXTURES.parent / "cliproxyapi-config" / "config.yaml"


def backend(**entry: object) -> Backend:
    return Backend(ProviderConfig.model_validate({"name": "p", **entry}))


def test_fixture_sections_become_providers_in_file_order_after_our_own(tmp_path):
    path = tmp_path / "config.yaml"
    own = "providers:\n  - {name: mine, type: openai, base-url: 'http://127.0.0.1:1/v1'}\n"
    path.write_text(own + CLIPROXY_FIXTURE.read_text())
    settings = load_settings(path, environ={})
    assert [(p.name, p.type, settings.imported.section_of(p.name)) for p in settings.providers] == [
        ("mine", "openai", None),
        ("claude-api-key[1]", "anthropic", "claude-api-key"),
        ("claude-api-key[2]", "anthropic", "claude-api-key"),
        ("codex-api-key[1]", "openai", "codex-api-key"),
        ("codex-api-key[2]", "openai", "codex-api-key"),
        ("gemini-api-key[1]", "google", "gemini-api-key"),
        ("gemini-api-key[2]", "google", "gemini-api-key"),
        ("vertex-api-key[1]", "google", "vertex-api-key"),
        ("vertex-api-key[2]", "google", "vertex-api-key"),
        ("openai-compatibility:openrouter", "openai", "openai-compatibility"),
        ("openai-compatibility:openrouter#2", "openai", "openai-compatibility"),  # its own proxy
        ("openai-compatibility:groq", "openai", "openai-compatibility"),
        ("openai-compatibility:local-vllm", "openai", "openai-compatibility"),
    ]
    assert settings.imported.skipped == (("openai-compatibility:legacy-provider", "disabled: true"),)
    by_name = {p.name: p for p in settings.providers}
    assert by_name["claude-api-key[1]"].base_url == "https://api.anthropic.com"
    assert by_name["claude-api-key[2]"].auth_header == "bearer"
    assert by_name["codex-api-key[2]"].proxy_url == "direct"
    assert by_name["openai-compatibility:openrouter#2"].proxy_url == "socks5://127.0.0.1:1080"
    assert by_name["openai-compatibility:local-vllm"].keys == []
    assert by_name["vertex-api-key[1]"].base_url == "https://aiplatform.googleapis.com"


def test_entries_differing_only_in_keys_are_one_provider_using_them_in_turn():
    imported = import_sections(
        {
            "gemini-api-key": [{"api-key": "k1"}, {"api-key": "k2"}, {"api-key": "k3", "prefix": "p"}, {}],
            "codex-api-key": [{"api-key": "c1"}],
        }
    )
    assert [(p.name, p.entry.get("api-keys")) for p in imported.providers] == [
        ("gemini-api-key[1]", ["k1", "k2"]),
        ("gemini-api-key[3]", ["k3"]),
    ]
    assert [label for label, _ in imported.skipped] == ["gemini-api-key[4]", "codex-api-key[1]"]
    pooled = Backend(ProviderConfig.model_validate(imported.providers[0].entry))
    assert [pooled.auth_for_call()[0][1] for _ in range(3)] == [b"k1", b"k2", b"k1"]


def test_entry_typos_are_warned_with_a_suggestion_and_misshaped_sections_stop_startup(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("claude-api-key:\n  - api-kye: k\n    modles: []\n")
    settings = load_settings(path, environ={})
    assert f"{path}: claude-api-key[1]: unknown key 'api-kye' (did you mean 'api-key'?)" in " ".join(
        settings.file_warnings
    )
    path.write_text("port: 1\nopenai-compatibility:\n  name: x\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: openai-compatibility: must be a list"):
        load_settings(path, environ={})
    path.write_text("codex-api-key:\n  - base-url: 'not a url'\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: codex-api-key\[0\]\.base-url: .*not an http"):
        load_settings(path, environ={})


def test_alias_pool_prefix_and_exclusions():
    b = backend(
        type="openai",
        **{"base-url": "http://127.0.0.1:1/v1", "prefix": "/or/", "excluded-models": ["*-spark", "old"]},
        models=[
            {"name": "deepseek/v3", "alias": "cheap"},
            {"name": "glm-4.6", "alias": "Cheap"},
            {"name": "kimi-k2"},
            "gpt-5*",
            "old",
        ],
    )
    assert b.served_names("CHEAP")[0] in ("deepseek/v3", "glm-4.6")
    assert {b.served_names("or/cheap")[0] for _ in range(2)} == {"deepseek/v3", "glm-4.6"}
    assert b.served_names("cheap")[0] != b.served_names("cheap")[0]  # in turn; the rest for a retry
    assert b.served_names("kimi-k2") == ["kimi-k2"]
    assert b.served_names("gpt-5.5") == ["gpt-5.5"]
    assert [b.serves(m) for m in ("cheap", "or/Cheap", "deepseek/v3", "gpt-5.5", "gpt-5.5-spark", "old")] == [
        True, True, False, True, False, False,
    ]  # fmt: skip
    assert b.model_names() == ["cheap", "kimi-k2", "or/cheap", "or/kimi-k2"]
    turn = b.served_names("cheap")[0]
    kept = {
        m: b.keeps_name(m) for m in ("kimi-k2", "gpt-5.5", "cheap", "or/kimi-k2", "KIMI-K2", "deepseek/v3")
    }
    assert kept == {
        "kimi-k2": True, "gpt-5.5": True,  # sent as asked
        "cheap": False, "or/kimi-k2": False, "KIMI-K2": False,  # a pool, a prefix, the configured spelling
        "deepseek/v3": True,  # a pool member's own name is not an alias (nor served: the alias is)
    }  # fmt: skip
    assert b.served_names("cheap")[0] != turn  # asking whether names are kept took no turn


@pytest.mark.parametrize(
    ("entry", "endpoints"),
    [
        ({"type": "openai", "api-format": "chat-completions"}, {Endpoint.CHAT, Endpoint.COMPLETIONS}),
        ({"type": "openai", "api-format": "responses"}, {Endpoint.RESPONSES}),
        ({"type": "openai"}, {Endpoint.CHAT, Endpoint.COMPLETIONS, Endpoint.RESPONSES}),
        ({"type": "anthropic"}, {Endpoint.MESSAGES, Endpoint.COUNT_TOKENS}),
        ({"type": "google", "path-style": "vertex"}, {Endpoint.GEMINI}),
        ({"type": "chatgpt"}, {Endpoint.RESPONSES}),
    ],
)
def test_speaks(entry, endpoints):
    b = backend(**{"base-url": "http://127.0.0.1:1/v1", **entry})
    assert {e for e in Endpoint if b.speaks(e)} == {*endpoints, Endpoint.LIST}


@pytest.mark.parametrize(
    ("entry", "auth"),
    [
        ({"type": "anthropic"}, (b"x-api-key", b"k")),
        ({"type": "anthropic", "auth-header": "bearer"}, (b"authorization", b"Bearer k")),
        ({"type": "openai", "base-url": "http://127.0.0.1:1"}, (b"authorization", b"Bearer k")),
        ({"type": "google"}, (b"x-goog-api-key", b"k")),
        (
            {"type": "openai", "base-url": "http://127.0.0.1:1", "auth-header": "x-api-key"},
            (b"x-api-key", b"k"),
        ),
    ],
)
def test_auth_header_styles(entry, auth):
    assert backend(**entry, **{"api-key": "k", "headers": {"X-Team": "t"}}).auth == [auth, (b"x-team", b"t")]


@pytest.mark.parametrize(
    ("entry", "path", "url"),
    [
        ({"type": "anthropic"}, b"/v1/messages", "https://api.anthropic.com/v1/messages"),
        ({"type": "google"}, b"/v1beta/models/m:countTokens",
         "https://generativelanguage.googleapis.com/v1beta/models/m:countTokens"),
        ({"type": "google", "path-style": "vertex", "base-url": "https://gw.example/api"},
         b"/v1beta/models/m:generateContent", "https://gw.example/api/v1/publishers/google/models/m:generateContent"),
        ({"type": "chatgpt"}, b"/v1/responses", "https://chatgpt.com/backend-api/codex/responses"),
        ({"type": "openai", "base-url": "https://api.openai.com"}, b"/v1/responses",
         "https://api.openai.com/v1/responses"),
        ({"type": "openai", "base-url": "https://open.example/api/paas/v4", "base-url-includes-version": True},
         b"/v1/chat/completions", "https://open.example/api/paas/v4/chat/completions"),
    ],
)  # fmt: skip
def test_default_base_urls_and_paths(entry, path, url):
    assert str(backend(**entry).url(path, b"")) == url


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "openai"}, "type openai needs a base-url"),
        ({"type": "anthropic", "api-format": "responses"}, "api-format does not apply to type anthropic"),
        ({"type": "openai", "base-url": "http://x", "path-style": "vertex"}, "path-style does not apply"),
        ({"type": "chatgpt", "api-key": "k"}, "api-key does not apply to type chatgpt"),
        ({"type": "google", "prefix": "a/b"}, "without '/' inside"),
    ],
)
def test_provider_entries_that_cannot_work_are_refused(tmp_path, entry, message):
    path = tmp_path / "config.yaml"
    lines = "".join(f"    {k}: {v!r}\n" for k, v in entry.items())
    path.write_text("providers:\n  - name: p\n" + lines)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ={})


def test_chatgpt_provider_fields():
    config = ProviderConfig.model_validate({"name": "sub", "type": "chatgpt", "accounts": ["me@example.com"]})
    assert (config.accounts, config.auth_url, config.base_url) == (
        ["me@example.com"],
        "https://auth.openai.com",
        "https://chatgpt.com/backend-api/codex",
    )


def test_check_lists_each_model_where_it_goes_and_what_was_not_taken():
    settings = load_settings(CLIPROXY_FIXTURE, environ={})
    placements = {(p.model, p.provider): p for p in describe_models(settings)}
    sonnet = placements[("claude-sonnet-latest", "claude-api-key[2]")]
    assert (sonnet.upstream, sonnet.wire_format, sonnet.section, sonnet.prefix) == (
        ("claude-sonnet-4-5-20250929",), "anthropic", "claude-api-key", "gw",
    )  # fmt: skip
    assert placements[("cheap-coder", "openai-compatibility:openrouter")].upstream == (
        "deepseek/deepseek-chat-v3.1",
        "z-ai/glm-4.6",
    )
    assert placements[("vertex-pro", "vertex-api-key[1]")].wire_format == "google (vertex paths)"
    lines = describe_lines(settings)
    assert "  codex-mini-latest -> codex-api-key[1] [openai (responses)] as gpt-5.4-mini" in lines
    assert "  not served: openai-compatibility:legacy-provider: disabled: true" in lines
    assert any(line.startswith("  not taken: auth-dir: OAuth logins are not read") for line in lines)
    assert any(line.startswith("  not taken: tls: ") and line.endswith("(off in the file)") for line in lines)


def test_a_ampbridge_config_can_say_the_same_directly(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            providers:
              - name: router
                type: openai
                base-url: http://127.0.0.1:1/api/v1
                api-format: chat-completions
                api-keys: [k1, k2]
                models:
                  - {name: deepseek/deepseek-chat-v3.1, alias: cheap-coder}
                  - {name: z-ai/glm-4.6, alias: cheap-coder}
                  - "llama-*"
                excluded-models: ["*-guard*"]
            """
        )
    )
    (config,) = load_settings(path, environ={}).providers
    b = Backend(config)
    assert [b.serves(m) for m in ("cheap-coder", "llama-3", "llama-guard-3")] == [True, True, False]
    assert [b.auth[0][1] for _ in range(2)] == [b"Bearer k1", b"Bearer k2"]
