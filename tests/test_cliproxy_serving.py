"""A CLIProxyAPI user's config.yaml, unchanged but for its URLs, serves the same models.

The realistic fixture file is copied and only its upstream URLs (and proxies) are pointed at
loopback fakes of the Anthropic, OpenAI Responses, Gemini (and Vertex-path) and OpenAI-compatible
chat APIs; entries that relied on a default base URL get one. Then the standalone app serves it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ampbridge.backend import Backend
from ampbridge.settings import load_settings
from ampbridge.standalone import create_app

from .loopback_proxy import LoopbackProxy
from .servers import FIXTURES, RecordingServer, ServerThread, amp_upstream, eventually, model_backend

CLIPROXY_FIXTURE = FIXTURES.parent / "cliproxyapi-config" / "config.yaml"
CLIENT = {"Authorization": "Bearer sk-fake-client-alice-0001"}


@dataclass
class Served:
    url: str
    fakes: dict[str, RecordingServer]
    amp: RecordingServer
    proxy: LoopbackProxy


def pointed_at(text: str, urls: dict[str, str], proxy: str) -> str:
    """The fixture with each upstream URL replaced; entries without a base-url get one."""
    replacements = {
        '"https://claude-gateway.example.invalid"': f'"{urls["anthropic"]}/gw"',
        '"https://api.openai.com/v1"': f'"{urls["openai"]}/v1"',
        '"https://responses-relay.example.invalid/v1"': f'"{urls["openai"]}/relay/v1"',
        '"https://generativelanguage.googleapis.com"': f'"{urls["google"]}/g2"',
        '"https://vertex-gateway.example.invalid/api"': f'"{urls["google"]}/vx/api"',
        '"https://openrouter.ai/api/v1"': f'"{urls["compat"]}/openrouter/api/v1"',
        '"https://api.groq.com/openai/v1"': f'"{urls["compat"]}/groq/openai/v1"',
        '"http://127.0.0.1:8000/v1"': f'"{urls["compat"]}/vllm/v1"',
        '"https://ampcode.com"': f'"{urls["amp"]}"',
        '"socks5://127.0.0.1:1080"': f'"{proxy}"',
        '"http://127.0.0.1:3128"': f'"{proxy}"',
        # base-url left empty in the file (the vendor's default): a fake instead
        '  - api-key: "sk-ant-fake-0000000000000000000000000000"\n':
            f'  - api-key: "sk-ant-fake-0000000000000000000000000000"\n    base-url: "{urls["anthropic"]}"\n',
        '  - api-key: "AIzaSyFAKE-gemini-key-44444444444444444"\n':
            f'  - api-key: "AIzaSyFAKE-gemini-key-44444444444444444"\n    base-url: "{urls["google"]}"\n',
        '  - api-key: "vk-fake-vertex-6666666666"\n':
            f'  - api-key: "vk-fake-vertex-6666666666"\n    base-url: "{urls["google"]}/v1x"\n',
    }  # fmt: skip
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    fakes = {
        "anthropic": model_backend("anthropic-api", ["claude-opus-4-7"]),
        "openai": model_backend("openai-api", ["gpt-5.4"]),
        "google": model_backend("gemini-api", ["gemini-2.5-flash-lite", "gemini-2.0-pro"]),
        "compat": model_backend("compat-api", []),
    }
    amp = amp_upstream()
    threads = [ServerThread(server) for server in (*fakes.values(), amp)]
    for thread in threads:
        thread.__enter__()
    urls = {name: thread.url for name, thread in zip([*fakes, "amp"], threads, strict=True)}
    with LoopbackProxy() as proxy:
        config = tmp_path_factory.mktemp("cliproxy") / "config.yaml"
        config.write_text(pointed_at(CLIPROXY_FIXTURE.read_text(), urls, proxy.url))
        loaded = load_settings(config, environ={})
        assert all(p.base_url.startswith("http://127.0.0.1:") for p in loaded.providers)
        assert loaded.amp_upstream_url.startswith("http://127.0.0.1:")
        app = create_app(config, environ={}, configure_logs=False)
        with ServerThread(app) as bridge:
            # the entries without models list their own: wait until they have
            eventually(lambda: "claude-opus-4-7" in models_listed(bridge.url), timeout=10)
            yield Served(bridge.url, fakes, amp, proxy)
    for thread in reversed(threads):
        thread.__exit__(None, None, None)


@pytest.fixture
def fresh(served: Served) -> Served:
    for server in (*served.fakes.values(), served.amp):
        server.reset()
    return served


def models_listed(url: str) -> list[str]:
    return [m["id"] for m in httpx.get(f"{url}/v1/models", headers=CLIENT).json()["data"]]


@dataclass(frozen=True)
class Case:
    provider: str  # /api/provider/{provider}/...
    kind: str  # anthropic | responses | chat | gemini
    model: str  # what the client asks for
    fake: str
    path: str  # where the fake must get it
    auth: tuple[str, str | None]  # header, value (None: the header must be absent)
    upstream_name: str
    extra: tuple[str, str] | None = None  # an entry's own header
    proxied: bool = False


CASES = [
    Case("anthropic", "anthropic", "claude-sonnet-latest", "anthropic", "/gw/v1/messages",
         ("Authorization", "Bearer sk-fake-claude-gateway-1111"), "claude-sonnet-4-5-20250929",
         ("X-Team", "platform"), proxied=True),
    Case("anthropic", "anthropic", "gw/claude-haiku-latest", "anthropic", "/gw/v1/messages",
         ("Authorization", "Bearer sk-fake-claude-gateway-1111"), "claude-haiku-4-5-20251001", proxied=True),
    Case("anthropic", "anthropic", "claude-opus-4-7", "anthropic", "/v1/messages",
         # not api.anthropic.com any more, so Bearer, as CLIProxyAPI sent it
         ("Authorization", "Bearer sk-ant-fake-0000000000000000000000000000"), "claude-opus-4-7"),
    Case("openai", "responses", "codex-mini-latest", "openai", "/v1/responses",
         ("Authorization", "Bearer sk-fake-openai-2222222222222222"), "gpt-5.4-mini"),
    Case("openai", "responses", "gpt-5.5", "openai", "/v1/responses",
         ("Authorization", "Bearer sk-fake-openai-2222222222222222"), "gpt-5.5"),
    Case("openai", "responses", "relay/gpt-5.4", "openai", "/relay/v1/responses",
         ("Authorization", "Bearer sk-fake-responses-relay-3333"), "gpt-5.4", ("X-Relay-Tenant", "fake-tenant")),
    Case("google", "gemini", "gemini-flash", "google", "/g2/v1beta/models/gemini-2.5-flash:generateContent",
         ("X-Goog-Api-Key", "AIzaSyFAKE-gemini-key-55555555555555555"), "gemini-2.5-flash",
         ("X-Goog-User-Project", "fake-project-123")),
    Case("google", "gemini", "gemini-pro", "google", "/g2/v1beta/models/gemini-3-pro-preview:generateContent",
         ("X-Goog-Api-Key", "AIzaSyFAKE-gemini-key-55555555555555555"), "gemini-3-pro-preview"),
    Case("google", "gemini", "gemini-2.0-pro", "google", "/v1beta/models/gemini-2.0-pro:generateContent",
         ("X-Goog-Api-Key", "AIzaSyFAKE-gemini-key-44444444444444444"), "gemini-2.0-pro"),
    Case("google", "gemini", "vertex-pro", "google",
         "/v1x/v1/publishers/google/models/gemini-2.5-pro:generateContent",
         ("X-Goog-Api-Key", "vk-fake-vertex-6666666666"), "gemini-2.5-pro"),
    Case("google", "gemini", "vertex-flash", "google",
         "/vx/api/v1/publishers/google/models/gemini-2.5-flash:generateContent",
         ("X-Goog-Api-Key", "vk-fake-vertex-gateway-7777"), "gemini-2.5-flash", ("X-Custom-Header", "fake"),
         proxied=True),
    Case("openrouter", "chat", "kimi-k2", "compat", "/openrouter/api/v1/chat/completions",
         ("Authorization", "Bearer sk-or-v1-fake-8888888888888888"), "moonshotai/kimi-k2:free",
         ("HTTP-Referer", "https://example.invalid")),
    Case("groq", "chat", "groq/llama-70b", "compat", "/groq/openai/v1/chat/completions",
         ("Authorization", "Bearer gsk_fake_aaaaaaaaaaaaaaaaaaaaaaaa"), "llama-3.3-70b-versatile"),
    Case("openai", "chat", "qwen3-coder", "compat", "/vllm/v1/chat/completions",
         ("Authorization", None), "Qwen/Qwen3-Coder-30B-A3B-Instruct"),
]  # fmt: skip


def call(url: str, case: Case) -> httpx.Response:
    base = f"{url}/api/provider/{case.provider}"
    messages = [{"role": "user", "content": "hi"}]
    if case.kind == "gemini":
        body: dict[str, object] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        return httpx.post(f"{base}/v1beta/models/{case.model}:generateContent", json=body, headers=CLIENT)
    path, body = {
        "anthropic": ("/v1/messages", {"model": case.model, "max_tokens": 8, "messages": messages}),
        "responses": ("/v1/responses", {"model": case.model, "input": "hi"}),
        "chat": ("/v1/chat/completions", {"model": case.model, "messages": messages}),
    }[case.kind]
    return httpx.post(base + path, json=body, headers=CLIENT, timeout=10)


def received_by(served: Served, case: Case) -> tuple[httpx.Response, list[str]]:
    reply = call(served.url, case)
    assert reply.status_code == 200, reply.text
    others = [name for name, fake in served.fakes.items() if fake.requests and name != case.fake]
    assert not served.amp.requests and not others, "the call went elsewhere"
    (request,) = served.fakes[case.fake].requests
    return reply, [
        request.path,
        request.header(case.auth[0]),
        *(request.header_all(case.extra[0]) if case.extra else []),
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model)
def test_each_configured_model_reaches_its_backend_with_its_key(fresh: Served, case: Case) -> None:
    proxied_before = len(fresh.proxy.passed)
    reply, (path, auth, *extra) = received_by(fresh, case)
    assert reply.headers["x-served-by"] == {
        "anthropic": "anthropic-api", "openai": "openai-api", "google": "gemini-api", "compat": "compat-api"
    }[case.fake]  # fmt: skip
    assert path.split("/models/")[0] == case.path.split("/models/")[0]
    assert auth == case.auth[1]
    if case.extra:
        assert extra == [case.extra[1]]
    assert (len(fresh.proxy.passed) > proxied_before) is case.proxied


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.model)
def test_the_upstream_gets_the_name_and_the_client_the_alias(fresh: Served, case: Case) -> None:
    """Needs the serving side to send ``Backend.served_names`` and restore the alias in replies."""
    reply, (path, *_) = received_by(fresh, case)
    request = fresh.fakes[case.fake].requests[0]
    if case.kind == "gemini":
        assert path == case.path
        assert reply.json()["modelVersion"] == case.model
    else:
        assert request.json()["model"] == case.upstream_name
        assert reply.json()["model"] == case.model


def test_a_pool_uses_its_names_in_turn(fresh: Served) -> None:
    case = Case("openrouter", "chat", "cheap-coder", "compat", "/openrouter/api/v1/chat/completions",
                ("Authorization", "Bearer sk-or-v1-fake-8888888888888888"), "")  # fmt: skip
    for _ in range(4):
        assert call(fresh.url, case).status_code == 200
    sent = [request.json()["model"] for request in fresh.fakes["compat"].requests]
    assert sorted(sent) == ["deepseek/deepseek-chat-v3.1"] * 2 + ["z-ai/glm-4.6"] * 2
    assert sent[0] != sent[1] and sent[1] != sent[2]


@pytest.mark.parametrize("model", ["gpt-4.1", "legacy", "claude-sonnet-4-5-20250929"])
def test_a_model_not_configured_goes_to_amp(fresh: Served, model: str) -> None:
    """Not configured: unknown, in a disabled entry, or an upstream name behind an alias."""
    reply = httpx.post(
        f"{fresh.url}/api/provider/openai/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers=CLIENT,
    )
    assert reply.status_code == 200
    assert reply.headers["x-served-by"] == "amp-upstream"
    (request,) = fresh.amp.requests
    assert request.json()["model"] == model
    assert request.header("Authorization") == "Bearer sgamp_user_fake_team_a_111111111111"
    assert not any(fake.requests for fake in fresh.fakes.values())


def test_the_model_list_shows_aliases_not_upstream_names(fresh: Served) -> None:
    listed = models_listed(fresh.url)
    for alias in ("claude-sonnet-latest", "gw/claude-sonnet-latest", "codex-mini-latest", "gemini-flash",
                  "vertex-pro", "vx/vertex-flash", "kimi-k2", "groq/llama-70b", "qwen3-coder"):  # fmt: skip
        assert alias in listed
    assert listed.count("cheap-coder") == 1
    for hidden in ("claude-sonnet-4-5-20250929", "gpt-5.4-mini", "legacy"):
        assert hidden not in listed  # upstream names behind an alias, a disabled entry


def test_client_keys_from_the_file_are_required(served: Served) -> None:
    reply = httpx.post(f"{served.url}/api/provider/openai/v1/chat/completions", json={"model": "kimi-k2"})
    assert reply.status_code == 401


def test_unchanged_file_keeps_the_vendor_defaults(tmp_path: Path) -> None:
    """The file as the user has it: official endpoints by default, x-api-key on api.anthropic.com."""
    settings = load_settings(CLIPROXY_FIXTURE, environ={})
    backends = {p.name: Backend(p) for p in settings.providers}
    claude = backends["claude-api-key[1]"]
    assert str(claude.url(b"/v1/messages", b"beta=true")) == "https://api.anthropic.com/v1/messages?beta=true"
    assert claude.auth_for_call()[0] == (b"x-api-key", b"sk-ant-fake-0000000000000000000000000000")
    gemini = backends["gemini-api-key[1]"]
    assert str(gemini.url(b"/v1beta/models/m:generateContent", b"")) == (
        "https://generativelanguage.googleapis.com/v1beta/models/m:generateContent"
    )
    vertex = backends["vertex-api-key[1]"]
    assert str(vertex.url(b"/v1beta/models/gemini-2.5-pro:streamGenerateContent", b"alt=sse")) == (
        "https://aiplatform.googleapis.com/v1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    )
    assert json.dumps([p.name for p in settings.providers]).count("legacy") == 0
