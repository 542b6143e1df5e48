"""AmpFallback alone, around a trivial local app and a trivial upstream."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from ampbridge import AmpFallback, ModelMapping, ProviderAlias, WireFormat
from ampbridge.mapping import ModelMapper, RouteDecision, decide
from ampbridge.models import ModelPatterns, split_thinking_suffix
from ampbridge.scope_keys import MODEL as MODEL_SCOPE


def recording_app(name: str, seen: list):
    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(
            {
                "path": scope["path"],
                "body": body,
                "model": scope.get(MODEL_SCOPE),
                "headers": dict((k.decode(), v.decode()) for k, v in scope["headers"]),
            }
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        model = json.loads(body).get("model") if body.startswith(b"{") else None
        await send({"type": "http.response.body", "body": json.dumps({"by": name, "model": model}).encode()})

    return app


def post(app, path, content: bytes, headers=None) -> httpx.Response:
    async def run():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(path, content=content, headers=headers)

    return anyio.run(run)


@pytest.fixture
def parts():
    local, upstream = [], []
    return local, upstream, recording_app("local", local), recording_app("upstream", upstream)


def test_local_model_goes_to_the_app_and_others_to_the_upstream_byte_for_byte(parts):
    local, upstream, local_app, upstream_app = parts
    app = AmpFallback(local_app, local_models=["claude-*"], upstream=upstream_app)
    body = b'{"model": "claude-x",   "messages": []}'
    assert post(app, "/api/provider/anthropic/v1/messages", body).json()["by"] == "local"
    assert local[0]["body"] == body and local[0]["model"] == "claude-x"
    other = b'{"model":"gpt-5" ,"x":1}'
    assert post(app, "/api/provider/openai/v1/responses?a=b", other).json()["by"] == "upstream"
    assert upstream[0]["path"] == "/api/provider/openai/v1/responses"
    assert upstream[0]["body"] == other


def test_predicate_and_local_models_objects(parts):
    local, upstream, local_app, upstream_app = parts

    class OnlyAnthropic:
        def serves(self, model: str, wire_format: WireFormat) -> bool:
            return wire_format is WireFormat.ANTHROPIC

    by_predicate = AmpFallback(local_app, local_models=lambda m: m.endswith("-local"), upstream=upstream_app)
    assert (
        post(by_predicate, "/api/provider/openai/v1/responses", b'{"model":"a-local"}').json()["by"]
        == "local"
    )
    by_format = AmpFallback(local_app, local_models=OnlyAnthropic(), upstream=upstream_app)
    assert post(by_format, "/api/provider/openai/v1/responses", b'{"model":"a"}').json()["by"] == "upstream"
    assert post(by_format, "/api/provider/anthropic/v1/messages", b'{"model":"a"}').json()["by"] == "local"


def test_works_behind_provider_alias_with_the_original_path_upstream(parts):
    local, upstream, local_app, upstream_app = parts
    app = ProviderAlias(AmpFallback(local_app, local_models=["m"], upstream=upstream_app))
    post(app, "/api/provider/groq/chat/completions", b'{"model":"m"}')
    post(app, "/api/provider/groq/chat/completions", b'{"model":"n"}')
    assert local[0]["path"] == "/v1/chat/completions"
    assert upstream[0]["path"] == "/api/provider/groq/chat/completions"


def test_mapped_request_and_reply(parts):
    local, upstream, local_app, upstream_app = parts
    app = AmpFallback(
        local_app,
        local_models=["small"],
        upstream=upstream_app,
        mappings=[ModelMapping(source="big", target="small")],
    )
    reply = post(app, "/api/provider/openai/v1/chat/completions", b'{"model":"big"}')
    assert json.loads(local[0]["body"])["model"] == "small"
    assert reply.json() == {"by": "local", "model": "big"}
    assert reply.headers["content-length"] == str(len(reply.content))


def test_body_over_the_cap_is_413_and_nothing_is_called(parts):
    local, upstream, local_app, upstream_app = parts
    app = AmpFallback(local_app, local_models=["m"], upstream=upstream_app, max_body_size=10)
    response = post(app, "/api/provider/openai/v1/responses", b'{"model":"m","pad":"xxxxxxxx"}')
    assert response.status_code == 413
    assert local == upstream == []


def test_non_model_requests_pass_through(parts):
    local, upstream, local_app, upstream_app = parts
    app = AmpFallback(local_app, local_models=[], upstream=upstream_app)
    post(app, "/something/else", b"{}")
    assert local[0]["path"] == "/something/else"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-5(high)", ("gpt-5", "(high)")),
        ("gemini-2.5-pro(8192)", ("gemini-2.5-pro", "(8192)")),
        ("plain", ("plain", "")),
        ("(odd)", ("(odd)", "")),
        ("a(b)(c)", ("a(b)", "(c)")),
    ],
)
def test_thinking_suffix(model, expected):
    assert split_thinking_suffix(model) == expected


class TestDecide:
    local = ModelPatterns(["local-a", "local-b", "glob-*"])

    def run(self, model, mappings=(), force=False, upstream=True):
        mapper = ModelMapper([ModelMapping(**m) for m in mappings])
        return decide(
            model, WireFormat.OPENAI, self.local, mapper, force_mappings=force, upstream_available=upstream
        )

    def test_local_first(self):
        assert self.run("LOCAL-A") == (RouteDecision.LOCAL, "LOCAL-A")
        assert self.run("glob-7(high)") == (RouteDecision.LOCAL, "glob-7(high)")

    def test_exact_is_case_insensitive_and_beats_regex(self):
        mappings = [{"from": ".*", "to": "local-b", "regex": True}, {"from": "Remote", "to": "local-a"}]
        assert self.run("rEMOTE", mappings) == (RouteDecision.MAPPED, "local-a")
        assert self.run("other", mappings) == (RouteDecision.MAPPED, "local-b")

    def test_regex_in_file_order_case_insensitive(self):
        mappings = [
            {"from": "^gpt", "to": "local-a", "regex": True},
            {"from": "gpt", "to": "local-b", "regex": True},
        ]
        assert self.run("GPT-5", mappings) == (RouteDecision.MAPPED, "local-a")

    def test_unserved_targets_are_skipped(self):
        mappings = [{"from": "x", "to": "nowhere"}, {"from": "x", "to": "local-b"}]
        assert self.run("x", mappings) == (RouteDecision.MAPPED, "local-b")
        assert self.run("x", mappings[:1]) == (RouteDecision.AMP_CREDITS, "x")

    def test_suffix_kept_unless_the_target_has_its_own(self):
        assert self.run("x(high)", [{"from": "x", "to": "local-a"}]) == (
            RouteDecision.MAPPED,
            "local-a(high)",
        )
        assert self.run("x(high)", [{"from": "x", "to": "local-a(low)"}]) == (
            RouteDecision.MAPPED,
            "local-a(low)",
        )

    def test_force_puts_mappings_first(self):
        mappings = [{"from": "local-a", "to": "local-b"}]
        assert self.run("local-a", mappings) == (RouteDecision.LOCAL, "local-a")
        assert self.run("local-a", mappings, force=True) == (RouteDecision.MAPPED, "local-b")

    def test_no_upstream_means_no_provider(self):
        assert self.run("unknown", upstream=False) == (RouteDecision.NO_PROVIDER, "unknown")
