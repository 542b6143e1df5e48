"""The byte checks that let the usage reader and the reply fixer skip parsing never skip what
counts: usage is read and fixes are made however a reply is cut into chunks (whole events,
several at once, an event split just before or after its blank line), and a reply that cannot
carry usage or need a fix is passed on without a JSON parse."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import anyio
import pytest

from ampbridge import accounting
from ampbridge.accounting import ReplyOutcome, TokenUsage
from ampbridge.models import WireFormat
from ampbridge.rewrite import ResponseFixer, RewritingSend

from .test_accounting import CASES, bodies, replay, start

SSE_CASES = sorted(name for name, case in CASES.items() if case[1] == "text/event-stream")
EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def event_ends(body: bytes) -> list[int]:
    return [match.end() for match in EVENT_END.finditer(body)]


def cut(body: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted({p for p in points if 0 < p < len(body)}), len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


def cuttings(body: bytes) -> list[list[bytes]]:
    """Each event a chunk; pairs of events; and every event end moved by -3..+3 bytes."""
    ends = event_ends(body)
    found = [cut(body, ends), cut(body, ends[1::2])]
    found += [cut(body, [end + shift for end in ends]) for shift in (-3, -2, -1, 1, 2, 3)]
    return found


def usage_of(dialect: str, messages: list[dict[str, Any]]) -> tuple[ReplyOutcome, list[Any]]:
    """The one outcome of a finished reply, and what reached the client."""
    outcomes, sent = replay(dialect, messages)
    (outcome,) = outcomes
    return outcome, sent


@pytest.mark.parametrize("case", SSE_CASES)
def test_stream_usage_is_read_however_events_fall_into_chunks(case: str) -> None:
    dialect, content_type, body, expected = CASES[case]
    for parts in cuttings(body):
        messages = [start(content_type), *bodies(parts)]
        outcome, sent = usage_of(dialect, messages)
        assert outcome.usage == expected, parts
        assert sent == messages


def test_an_event_whose_blank_line_comes_with_the_next_events_is_still_read() -> None:
    usage_event = b'data: {"type":"message_delta","usage":{"output_tokens":7}}\n'
    parts = [
        usage_event,
        b'\nevent: ping\ndata: {"type":"ping"}\n\n',  # ends the usage event; says no "usage" itself
        b'data: {"type":"message_stop"}\n',
        b"\n",
    ]
    outcome, _ = usage_of("anthropic", [start("text/event-stream"), *bodies(parts)])
    assert outcome.usage == TokenUsage(output_tokens=7)


def test_the_word_usage_split_between_chunks_is_still_read() -> None:
    event = b'data: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
    at = event.index(b"usage") + 3
    outcome, _ = usage_of("anthropic", [start("text/event-stream"), *bodies([event[:at], event[at:]])])
    assert outcome.usage == TokenUsage(output_tokens=9)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    seen: list[bytes] = []
    original = accounting._parse

    def counting(data: bytes) -> Any:
        seen.append(data)
        return original(data)

    monkeypatch.setattr(accounting, "_parse", counting)
    return seen


def test_only_events_and_bodies_that_mention_usage_are_parsed(parses: list[bytes]) -> None:
    dialect, content_type, body, expected = CASES["anthropic-sse-cached"]
    parts = cut(body, event_ends(body))
    outcome, _ = usage_of(dialect, [start(content_type), *bodies(parts)])
    assert outcome.usage == expected
    # message_start, the two message_delta events, and a text delta that says "usage"; not the rest
    data_lines = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: ")]
    assert parses == [data for data in data_lines if b"usage" in data]
    assert 0 < len(parses) < len(data_lines)
    parses.clear()
    reply = json.dumps({"id": "m", "type": "message", "content": [{"type": "text", "text": "hi"}]}).encode()
    outcome, _ = usage_of("anthropic", [start("application/json"), *bodies([reply])])
    assert outcome.usage is None and parses == []


def fixed(fixer: ResponseFixer, content_type: str, parts: list[bytes]) -> tuple[list[Any], list[Any]]:
    sent: list[Any] = []
    messages = [start(content_type), *bodies(parts)]

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> None:
        rewriting = RewritingSend(send, fixer, max_json_size=1 << 20)
        for message in messages:
            await rewriting(message)
        await rewriting.finish()

    anyio.run(main)
    return messages, sent


TOOL_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"m","role":"assistant","content":[]}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t",'
    b'"name":"bash","input":{}}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)


def tool_fixer() -> ResponseFixer:
    return ResponseFixer(wire_format=WireFormat.ANTHROPIC, requested_model=None, tool_names={"bash": "Bash"})


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_streamed_tool_block_is_fixed_however_events_fall_into_chunks(newline: bytes) -> None:
    expected_block = {"type": "tool_use", "id": "t", "name": "Bash", "input": {}, "signature": ""}
    for parts in cuttings(TOOL_STREAM.replace(b"\n", newline)):
        _, sent = fixed(tool_fixer(), "text/event-stream", parts)
        stream = b"".join(message["body"] for message in sent[1:])
        events = [json.loads(line[5:]) for line in stream.split(b"\n") if line.startswith(b"data:")]
        assert [event["type"] for event in events] == [
            "message_start",
            "content_block_delta",
            "content_block_start",
            "message_stop",
        ]
        assert events[2]["content_block"] == expected_block, parts
        assert stream.count(newline * 2) == 4 and not sent[-1]["more_body"]


def test_whole_events_that_need_no_fix_are_passed_on_as_the_same_messages() -> None:
    quiet = TOOL_STREAM.split(b"event: content_block_start")[0]  # no tool block
    messages, sent = fixed(tool_fixer(), "text/event-stream", cut(quiet, event_ends(quiet)))
    assert sent[1:] == messages[1:]
    assert all(out is original for out, original in zip(sent[1:-1], messages[1:-1], strict=True))
