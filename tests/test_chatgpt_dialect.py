"""Pure parts of the ChatGPT provider: the request reshaped to the Codex dialect, the SSE reader,
the whole-response assembler, error classification, JWT identity, PKCE and private files."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ampbridge.chatgpt.credentials import Tokens
from ampbridge.chatgpt.dialect import (
    DialectError,
    ResponseAssembler,
    SseReader,
    error_from_event,
    error_from_reply,
    reshape_request,
)
from ampbridge.chatgpt.files import write_private_json
from ampbridge.chatgpt.jwt_claims import identity_of
from ampbridge.chatgpt.login_flows import code_from_callback
from ampbridge.chatgpt.oauth import LoginError, authorize_url, new_pkce

from .fake_openai import AUTH_CLAIM, make_jwt


def test_reshape_applies_the_codex_body_rules() -> None:
    call = reshape_request(
        {
            "model": "gpt-5.4(xhigh)",
            "input": [
                {"role": "system", "content": "be brief"},
                {"type": "message", "role": "user", "content": "x"},
            ],
            "max_output_tokens": 10,
            "temperature": 0.1,
            "previous_response_id": "resp_0",
            "stream_options": {"include_obfuscation": False},
            "service_tier": "flex",
            "include": ["message.output_text.logprobs"],
            "reasoning": {"summary": "auto"},
            "tools": [{"type": "function", "name": "f", "parameters": {}}],
        }
    )
    body = call.body
    assert body["model"] == "gpt-5.4" and call.model == "gpt-5.4"
    assert body["reasoning"] == {"summary": "auto", "effort": "xhigh"}
    assert body["stream"] is True and body["store"] is False and body["instructions"] == ""
    assert call.streamed is False
    assert [item["role"] for item in body["input"]] == ["developer", "user"]
    for removed in (
        "max_output_tokens",
        "temperature",
        "previous_response_id",
        "stream_options",
        "service_tier",
    ):
        assert removed not in body
    assert body["include"] == ["message.output_text.logprobs", "reasoning.encrypted_content"]
    assert body["parallel_tool_calls"] is True
    assert body["prompt_cache_key"] == call.session_id


def test_reshape_wraps_a_string_input_and_keeps_what_is_allowed() -> None:
    call = reshape_request(
        {
            "model": "gpt-5.5",
            "input": "hello",
            "stream": True,
            "service_tier": "priority",
            "instructions": "I",
        },
        session_hint="T-1",
    )
    assert call.body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
    ]
    assert (
        call.streamed is True and call.body["service_tier"] == "priority" and call.body["instructions"] == "I"
    )
    assert "parallel_tool_calls" not in call.body
    assert (
        call.session_id == reshape_request({"model": "gpt-5.5", "input": "x"}, session_hint="T-1").session_id
    )
    assert reshape_request({"model": "gpt-5.5(fast)", "input": "x"}).body["model"] == "gpt-5.5"


@pytest.mark.parametrize("payload", [{"input": "x"}, {"model": "gpt-5.4", "input": 3}])
def test_reshape_refuses_what_is_not_a_responses_request(payload: dict[str, object]) -> None:
    with pytest.raises(DialectError):
        reshape_request(payload)


def test_sse_reader_splits_events_across_chunks_and_line_endings() -> None:
    reader = SseReader()
    stream = b'event: a\ndata: {"type":"x.one"}\n\nevent: b\r\ndata: {"type":"x.two"}\r\n\r\ndata: {"type":"x.three"}'
    events = [e for i in range(0, len(stream), 7) for e in reader.feed(stream[i : i + 7])]
    events += list(reader.finish())
    assert [e.type for e in events] == ["x.one", "x.two", "x.three"]
    assert b"".join(e.raw for e in events[:2]) == stream[: stream.index(b'data: {"type":"x.three')]


def test_assembler_fills_an_empty_completed_output_from_the_items() -> None:
    assembler = ResponseAssembler()
    item = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}
    reader = SseReader()
    raw = "".join(
        f"data: {json.dumps(e)}\n\n"
        for e in (
            {"type": "response.output_item.done", "output_index": 1, "item": {**item, "id": "b"}},
            {"type": "response.output_item.done", "output_index": 0, "item": {**item, "id": "a"}},
            {"type": "response.completed", "response": {"id": "r", "status": "completed", "output": []}},
        )
    )
    for event in reader.feed(raw.encode()):
        assembler.add(event, now=0)
    result = assembler.result()
    assert isinstance(result, dict) and [i["id"] for i in result["output"]] == ["a", "b"]


def test_a_stream_without_completed_event_is_a_408() -> None:
    assembler = ResponseAssembler()
    for event in SseReader().feed(b'data: {"type":"response.created","response":{}}\n\n'):
        assembler.add(event, now=0)
    result = assembler.result()
    assert not isinstance(result, dict) and result.status == 408


def test_errors_are_classified_from_bodies_and_events() -> None:
    limit = error_from_reply(
        429,
        b'{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","resets_in_seconds":60}}',
        now=1000,
    )
    assert limit.usage_limit and limit.resets_at == 1060 and limit.status == 429
    detail = error_from_reply(400, b'{"detail":"Store must be set to false"}', now=0)
    assert (detail.status, detail.message, detail.type) == (
        400,
        "Store must be set to false",
        "invalid_request_error",
    )
    [event] = SseReader().feed(
        b'event: response.failed\ndata: {"type":"response.failed","response":{"error":{"code":"context_length_exceeded","message":"too long"}}}\n\n'
    )
    failed = error_from_event(event, now=0)
    assert failed is not None and failed.status == 400 and failed.message == "too long"
    [overload] = SseReader().feed(
        b'data: {"type":"error","error":{"type":"service_unavailable_error","message":"busy"}}\n\n'
    )
    assert error_from_event(overload, now=0).status == 503  # type: ignore[union-attr]


def test_identity_reads_the_id_token_then_the_access_token() -> None:
    id_token = make_jwt({"email": "u@example.com", AUTH_CLAIM: {"chatgpt_plan_type": "team"}})
    access = make_jwt(
        {"exp": 2000, "iat": 1000, AUTH_CLAIM: {"chatgpt_account_id": "acc-9", "chatgpt_plan_type": "pro"}}
    )
    identity = identity_of(id_token, access)
    assert (identity.account_id, identity.email, identity.plan, identity.expires_at) == (
        "acc-9",
        "u@example.com",
        "team",
        2000,
    )
    assert identity_of("not-a-jwt", "x.y.z").account_id is None
    assert "secret" not in repr(Tokens(id_token, access, "secret-refresh"))


def test_pkce_and_authorize_url_follow_the_reference() -> None:
    pkce = new_pkce()
    assert len(base64.urlsafe_b64decode(pkce.verifier + "==")) == 96
    assert (
        pkce.challenge
        == base64.urlsafe_b64encode(hashlib.sha256(pkce.verifier.encode()).digest()).rstrip(b"=").decode()
    )
    url = urlsplit(
        authorize_url(
            "https://auth.example", redirect="http://localhost:1455/auth/callback", state="s", pkce=pkce
        )
    )
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert url.path == "/oauth/authorize"
    assert (
        query["scope"] == "openid email profile offline_access" and query["code_challenge_method"] == "S256"
    )
    assert query["id_token_add_organizations"] == "true" and query["codex_cli_simplified_flow"] == "true"
    assert code_from_callback("http://localhost:1455/auth/callback?code=c1&state=s", "s") == "c1"
    assert code_from_callback("code=c2&state=s", "s") == "c2"
    with pytest.raises(LoginError, match="access_denied"):
        code_from_callback("/auth/callback?error=access_denied&state=s", "s")


def test_private_json_replaces_the_file_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "d" / "a.json"
    path.parent.mkdir()
    path.write_text("{}")
    path.chmod(0o644)
    write_private_json(path, {"k": 1})
    assert json.loads(path.read_text()) == {"k": 1}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]
