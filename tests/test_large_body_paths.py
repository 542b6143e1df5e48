"""Large model-call bodies: forwarded byte for byte without being parsed, fixed for a local
backend from the spans of the few members the fixes need, in about one copy of memory."""

from __future__ import annotations

import json
import re
import tracemalloc

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampbridge import AmpFallback
from ampbridge.model_scan import scan_model
from ampbridge.request_body import THREAD_THRESHOLD, RequestBody
from ampbridge.rewrite import anthropic_request_may_change, sanitize_anthropic_request

from .conftest import provider_settings

MIB = 1 << 20
MESSAGES = "/api/provider/anthropic/v1/messages"


def large_body(
    model_member: bytes, *, messages: list | None = None, pad: int = 3 * MIB, tail: bytes = b""
) -> bytes:
    """An Anthropic request over the size parsed in a thread, in odd but valid JSON: spaces
    around members, non-ASCII kept, escapes in the padding, ``model_member`` as written."""
    conversation = messages or [{"role": "user", "content": 'héllo "quoted" \\ back\\slash'}]
    padding = ('pad é \\" ' * (pad // 10)).encode()
    return (
        b'{ "max_tokens" : 16,\n  '
        + model_member
        + b' ,"messages":'
        + json.dumps(conversation, ensure_ascii=False).encode()
        + b', "metadata": {"note": "'
        + padding
        + b'"}'
        + tail
        + b"}"
    )


def receive_in_chunks(body: bytes, size: int = 64 * 1024):
    position = 0

    async def receive():
        nonlocal position
        chunk = body[position : position + size]
        position += size
        return {"type": "http.request", "body": chunk, "more_body": position < len(body)}

    return receive


# --- over real HTTP: forwarded, fixed, renamed ---------------------------------------------


def test_a_forwarded_large_body_arrives_byte_for_byte(backends, upstream, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    body = large_body(b'"model": "claude-remote-only"')
    response = httpx.post(
        ampbridge.url + MESSAGES, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.headers["x-served-by"] == "amp-upstream"
    (received,) = [r for r in upstream.requests if r.path == MESSAGES]
    assert received.body == body
    assert received.header("content-length") == str(len(body))
    assert backends["anthropic"].requests == []


def test_a_large_model_key_written_with_escapes_still_routes(backends, upstream, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    local = large_body(b'"m\\u006f\\u0064el": "claude-opus-4-7"')
    remote = large_body(b'"\\u006d\\u006F\\u0064\\u0065\\u006C": "claude-remote-only"')
    assert httpx.post(ampbridge.url + MESSAGES, content=local).headers["x-served-by"] == "anthropic-backend"
    assert httpx.post(ampbridge.url + MESSAGES, content=remote).headers["x-served-by"] == "amp-upstream"
    assert backends["anthropic"].requests[-1].body == local
    assert [r.body for r in upstream.requests if r.path == MESSAGES] == [remote]


def test_a_large_local_body_with_unsigned_thinking_is_still_fixed(backends, upstream, bridge):
    ampbridge = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "  "},
                {"type": "tool_use", "id": "t1", "name": "Read", "input": {}, "signature": "x"},
            ],
        },
    ]
    body = large_body(b'"model":"claude-opus-4-7"', messages=messages)
    response = httpx.post(ampbridge.url + MESSAGES, content=body)
    assert response.status_code == 200
    received = backends["anthropic"].requests[-1]
    assert received.header("content-length") == str(len(received.body))
    sent = received.json()
    assert sent["messages"][1]["content"] == [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]
    assert sent["metadata"] == json.loads(body)["metadata"]


def test_a_large_mapped_body_gets_the_new_model_in_place(backends, upstream, bridge):
    mappings = [{"from": "claude-opus-4-1", "to": "claude-haiku-4-5-20251001"}]
    ampbridge = bridge(
        provider_settings(backends, amp_upstream_url=upstream.url, amp_model_mappings=mappings)
    )
    for member in (b'"model" :"claude-opus-4-1"', b'"model":"claude-opus-4-1(high)"'):
        body = large_body(member)
        response = httpx.post(ampbridge.url + MESSAGES, content=body)
        assert response.status_code == 200
        assert response.json()["model"] == json.loads(body)["model"]  # the reply names what was asked
        received = backends["anthropic"].requests[-1]
        served = json.dumps(json.loads(body)["model"].replace("claude-opus-4-1", "claude-haiku-4-5-20251001"))
        old_value = re.search(rb'"claude-opus-4-1[^"]*"', body)
        assert old_value is not None
        # Every byte but the model's value is as sent; the length is the new one.
        assert received.body == body.replace(old_value.group(), served.encode(), 1)
        assert received.header("content-length") == str(len(received.body))


def test_a_large_mapped_body_with_two_model_members_is_rewritten_whole(backends, upstream, bridge):
    mappings = [{"from": "claude-opus-4-1", "to": "claude-haiku-4-5-20251001"}]
    ampbridge = bridge(
        provider_settings(backends, amp_upstream_url=upstream.url, amp_model_mappings=mappings)
    )
    body = large_body(b'"model":"ignored","model":"claude-opus-4-1"')
    assert httpx.post(ampbridge.url + MESSAGES, content=body).status_code == 200
    received = backends["anthropic"].requests[-1]
    assert received.body.count(b'"model"') == 1
    assert received.json()["model"] == "claude-haiku-4-5-20251001"
    assert received.header("content-length") == str(len(received.body))


# --- in process: the reply's tool names come from the large request's tools -----------------


def test_a_large_local_body_still_gives_the_reply_its_tool_names():
    seen: list[bytes] = []

    async def local_app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(body)
        reply = {"model": "m", "content": [{"type": "tool_use", "id": "t", "name": "read", "input": {}}]}
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(reply).encode()})

    app = AmpFallback(local_app, local_models=["m"])
    body = large_body(b'"model":"m"', tail=b',"tools":[{"name":"Read","input_schema":{}}]')

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(MESSAGES, content=body)

    response = anyio.run(run)
    assert response.json()["content"][0]["name"] == "Read"
    assert seen == [body]


# --- RequestBody: one copy, in place -------------------------------------------------------


@pytest.mark.parametrize("declared", [None, "exact", "more"])
def test_a_large_body_read_lazily_is_held_once_and_not_parsed(declared):
    body = large_body(b'"model":"m"', pad=8 * MIB)
    length = {"exact": len(body), "more": len(body) + 100, None: None}[declared]

    async def run() -> tuple[bytes, int]:
        tracemalloc.start()
        try:
            read = await RequestBody.read(receive_in_chunks(body), 1 << 30, lazy=True, declared=length)
            assert read.unparsed and read.payload is None
            assert (await read.scan()).model == "m"
            data = read.take_bytes()
            return data, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    data, peak = anyio.run(run)
    assert data == body
    assert peak < 1.2 * len(body), f"{peak / len(body):.2f}x the body"


@pytest.mark.parametrize("new_model", ["s", "a-model-name-longer-than-the-one-it-replaces"])
def test_a_member_is_replaced_in_place(new_model):
    body = large_body(b'"model": "medium-name"', pad=8 * MIB)

    async def run() -> tuple[bytes, int]:
        tracemalloc.start()  # from the read on: a block resized in place is then seen as one
        try:
            read = await RequestBody.read(receive_in_chunks(body), 1 << 30, lazy=True)
            data = read.take_with_member("model", new_model)
            return data, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    data, peak = anyio.run(run)
    assert data == body.replace(b'"medium-name"', json.dumps(new_model).encode(), 1)
    assert peak < 1.2 * len(body), f"{peak / len(body):.2f}x the body"


def test_a_small_body_is_parsed_at_once_and_a_large_one_when_asked():
    async def run() -> None:
        small = await RequestBody.read(receive_in_chunks(b'{"model":"m","tools":[]}', 5), 1 << 30, lazy=True)
        assert not small.unparsed and small.payload == {"model": "m", "tools": []}
        body = large_body(b'"model":"m"', tail=b',"tools":[{"name":"A"}]')
        large = await RequestBody.read(receive_in_chunks(body), 1 << 30, lazy=True)
        assert await large.member("tools") == [{"name": "A"}]
        assert await large.member("absent") is None
        await large.parse()
        assert not large.unparsed and large.payload == json.loads(body)
        assert large.take_bytes() == body

    anyio.run(run)
    assert THREAD_THRESHOLD < 3 * MIB  # the bodies above are "large"


# --- the scan's spans and string ends, the sanitizing pre-check ----------------------------

members = st.dictionaries(
    st.sampled_from(["model", "tools", "messages", "a", "mo"]),
    st.recursive(
        st.none() | st.integers() | st.text(alphabet=st.sampled_from('a"\\{}[]é\n')),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["tools", "b"]), children)
        ),
        max_leaves=8,
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(members, st.booleans(), st.booleans())
def test_member_spans_hold_what_json_loads_sees(document, ensure_ascii, escaped_keys):
    body = json.dumps(document, ensure_ascii=ensure_ascii, indent=1).encode()
    if escaped_keys:
        body = body.replace(b'"tools"', b'"t\\u006fols"').replace(b'"messages"', b'"messa\\u0067es"')
    scan = scan_model(body)
    for key in ("model", "tools", "messages"):
        span = scan.span(key)
        assert (span is not None) == (key in document)
        if span is not None:
            assert json.loads(body[span[0] : span[1]]) == document[key]
            assert scan.count(key) == 1


@pytest.mark.parametrize("escaped_backslashes", [0, 1, 7, 8, 9, 20])
@pytest.mark.parametrize("escaped_quote", [False, True])
@pytest.mark.parametrize("offset", [-3, -2, -1, 0, 1, 2])
@pytest.mark.parametrize("window", [1 << 16, 1 << 20])  # the scan's regex and search windows
def test_string_ends_are_found_across_search_windows(escaped_backslashes, escaped_quote, offset, window):
    """A run of backslashes (before a quote or not) placed where a search window ends, after
    plain text and after text full of escaped quotes."""
    run = b"\\\\" * escaped_backslashes + (b'\\"' if escaped_quote else b"")
    for filler in (b"x", b'y\\"'):
        count = (window + offset - len(run) // 2) // len(filler)
        content = filler * count + run + b"zzz" + b'\\"' * 3
        body = b'{"a":"' + content + b'","model":"m"}'
        assert json.loads(body)["a"].endswith('zzz"""')
        scan = scan_model(body)
        assert (scan.is_object, scan.model) == (True, "m")
        assert scan.span("model") == (len(body) - 4, len(body) - 1)


@pytest.mark.parametrize(
    ("messages", "may_change"),
    [
        (b'[{"role":"assistant","content":[{"type":"text","text":"thinking about signatures"}]}]', False),
        (b'[{"role":"assistant","content":[{"type":"thinking","thinking":"x","signature":"s"}]}]', True),
        (b'[{"role":"assistant","content":[{"type":"tool_use","signature":""}]}]', True),
        (b'[{"role":"assistant","content":[{"type":"th\\u0069nking","thinking":"x"}]}]', True),
        (b'[{"role":"assistant","content":[{"type":"tool_use","sig\\u006Eature":""}]}]', True),
        (b'[{"role":"user","content":"caf\\u00e9 \\u001b[0m \\n"}]', False),
    ],
)
def test_the_byte_check_sees_every_block_sanitizing_could_change(messages, may_change):
    body = b'{"model":"m","messages":' + messages + b"}"
    span = scan_model(body).span("messages")
    assert span is not None
    assert anthropic_request_may_change(body, *span) is may_change
    assert sanitize_anthropic_request(json.loads(body)) <= may_change


blocks = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "thinking", "tool_use"])},
    optional={"signature": st.sampled_from(["", " ", "sig"]), "text": st.text(alphabet='thinkgsature é"\\')},
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": st.lists(blocks)})),
    st.booleans(),
)
def test_a_body_the_byte_check_clears_is_never_changed_by_sanitizing(messages, ensure_ascii):
    body = json.dumps({"model": "m", "messages": messages}, ensure_ascii=ensure_ascii).encode()
    escaped = re.sub(rb"\\.|[a-z]", _escape_letter, body)  # every letter outside an escape escaped
    for candidate in (body, escaped):
        span = scan_model(candidate).span("messages")
        assert span is not None
        if not anthropic_request_may_change(candidate, *span):
            assert not sanitize_anthropic_request(json.loads(candidate))


def _escape_letter(match: re.Match[bytes]) -> bytes:
    found = match.group()
    return found if found.startswith(b"\\") else b"\\u%04x" % found[0]
