"""Token accounting: the usage a client would read in each reply format, JSON and streamed, split
at any byte, gzip or not; and a watcher that hands every ASGI message on untouched and at once."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import anyio
import pytest

from ampbridge.accounting import ReplyOutcome, TokenUsage, UsageWatchingSend

from .servers import RESPONSES

SPLITS = (1, 2, 3, 7, 64, 1_000_000)


def sse(*events: dict[str, Any], named: bool = True, newline: str = "\n") -> bytes:
    lines = []
    for event in events:
        if named and "type" in event:
            lines.append(f"event: {event['type']}")
        lines.append(f"data: {json.dumps(event)}")
        lines.append("")
    return (newline.join(lines) + newline).encode()


ANTHROPIC_CACHED_STREAM = sse(
    {
        "type": "message_start",
        "message": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "content": [],
            "usage": {
                "input_tokens": 30,
                "cache_creation_input_tokens": 200,
                "cache_read_input_tokens": 1000,
                "output_tokens": 1,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "the usage of words"},
    },
    {"type": "message_delta", "delta": {"stop_reason": None}, "usage": {"output_tokens": 15}},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 42}},
    {"type": "message_stop"},
)
OPENAI_CHAT_STREAM = (
    sse(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "hi"}}],
            "usage": None,
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": None,
        },
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {
                "prompt_tokens": 321,
                "completion_tokens": 54,
                "total_tokens": 375,
                "prompt_tokens_details": {"cached_tokens": 256},
            },
        },
        named=False,
    )
    + b"data: [DONE]\n\n"
)
GEMINI_CHUNKS = [
    {
        "candidates": [{"content": {"parts": [{"text": 'a "quoted" } ] \\ usage'}], "role": "model"}}],
        "usageMetadata": {"promptTokenCount": 40, "candidatesTokenCount": 2, "totalTokenCount": 42},
    },
    {
        "candidates": [
            {"content": {"parts": [{"text": "more [text] {"}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {
            "promptTokenCount": 40,
            "candidatesTokenCount": 9,
            "thoughtsTokenCount": 5,
            "cachedContentTokenCount": 16,
            "totalTokenCount": 54,
        },
    },
]
GEMINI_LAST = TokenUsage(input_tokens=40, output_tokens=14, cache_read_tokens=16)


def fixture(name: str) -> bytes:
    return (Path(RESPONSES) / name).read_bytes()


def responses_stream_usage() -> TokenUsage:
    """The fixture's own figures, read the way a client would: the completed response's usage."""
    for line in fixture("openai_responses.sse").decode().splitlines():
        if line.startswith("data:") and "response.completed" in line:
            usage = json.loads(line[5:])["response"]["usage"]
            return TokenUsage(
                input_tokens=usage["input_tokens"],
                output_tokens=usage["output_tokens"],
                cache_read_tokens=usage.get("input_tokens_details", {}).get("cached_tokens", 0),
            )
    raise AssertionError("fixture has no response.completed event")


CASES: dict[str, tuple[str, str, bytes, TokenUsage]] = {
    "anthropic-json": (
        "anthropic",
        "application/json",
        fixture("anthropic_title.json"),
        TokenUsage(input_tokens=10, output_tokens=5),
    ),
    "anthropic-json-cached": (
        "anthropic",
        "application/json",
        json.dumps(
            {
                "type": "message",
                "content": [],
                "usage": {
                    "input_tokens": 3,
                    "cache_creation_input_tokens": 7,
                    "cache_read_input_tokens": 90,
                    "output_tokens": 11,
                },
            }
        ).encode(),
        TokenUsage(input_tokens=100, output_tokens=11, cache_read_tokens=90, cache_creation_tokens=7),
    ),
    # message_start says output_tokens 1; message_delta's 2 replaces it (cumulative), never 3.
    "anthropic-sse": (
        "anthropic",
        "text/event-stream",
        fixture("anthropic_messages.sse"),
        TokenUsage(input_tokens=12, output_tokens=2),
    ),
    "anthropic-sse-cached": (
        "anthropic",
        "text/event-stream; charset=utf-8",
        ANTHROPIC_CACHED_STREAM,
        TokenUsage(input_tokens=1230, output_tokens=42, cache_read_tokens=1000, cache_creation_tokens=200),
    ),
    "anthropic-sse-crlf": (
        "anthropic",
        "text/event-stream",
        ANTHROPIC_CACHED_STREAM.replace(b"\n", b"\r\n"),
        TokenUsage(input_tokens=1230, output_tokens=42, cache_read_tokens=1000, cache_creation_tokens=200),
    ),
    "openai-chat-json": (
        "chat",
        "application/json",
        json.dumps(
            {
                "id": "c",
                "object": "chat.completion",
                "choices": [],
                "usage": {"prompt_tokens": 17, "completion_tokens": 4, "total_tokens": 21},
            }
        ).encode(),
        TokenUsage(input_tokens=17, output_tokens=4),
    ),
    "openai-chat-sse": (
        "chat",
        "text/event-stream",
        OPENAI_CHAT_STREAM,
        TokenUsage(input_tokens=321, output_tokens=54, cache_read_tokens=256),
    ),
    "openai-responses-json": (
        "responses",
        "application/json",
        json.dumps(
            {
                "id": "r",
                "object": "response",
                "output": [],
                "usage": {
                    "input_tokens": 500,
                    "input_tokens_details": {"cached_tokens": 128},
                    "output_tokens": 60,
                    "output_tokens_details": {"reasoning_tokens": 20},
                    "total_tokens": 560,
                },
            }
        ).encode(),
        TokenUsage(input_tokens=500, output_tokens=60, cache_read_tokens=128),
    ),
    "openai-responses-sse": (
        "responses",
        "text/event-stream",
        fixture("openai_responses.sse"),
        responses_stream_usage(),
    ),
    "gemini-json": (
        "gemini",
        "application/json; charset=UTF-8",
        fixture("google_generate.json"),
        TokenUsage(input_tokens=20, output_tokens=6),
    ),
    "gemini-sse": (
        "gemini",
        "text/event-stream",
        b"".join(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in GEMINI_CHUNKS),
        GEMINI_LAST,
    ),
    "gemini-array": (
        "gemini",
        "application/json",
        ("[" + ",\r\n".join(json.dumps(chunk, indent=2) for chunk in GEMINI_CHUNKS) + "]").encode(),
        GEMINI_LAST,
    ),
}


def chunks(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)] or [b""]


def start(content_type: str, *, status: int = 200, encoding: str | None = None) -> dict[str, Any]:
    headers = [(b"content-type", content_type.encode())]
    if encoding:
        headers.append((b"content-encoding", encoding.encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


def bodies(parts: list[bytes]) -> list[dict[str, Any]]:
    return [
        {"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]


def replay(dialect: str, messages: list[dict[str, Any]]) -> tuple[list[ReplyOutcome], list[Any]]:
    """Drives the watcher; checks each message reached the client, as the same object, before
    the watcher returned."""
    sent: list[Any] = []
    outcomes: list[ReplyOutcome] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> None:
        watcher = UsageWatchingSend(send, dialect=dialect, on_finish=outcomes.append)
        for message in messages:
            await watcher(message)
            assert sent[-1] is message
        watcher.finish()  # after a finished reply this reports nothing more

    anyio.run(main)
    return outcomes, sent


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_tokens_equal_the_replys_usage_at_any_split(case: str, split: int) -> None:
    dialect, content_type, body, expected = CASES[case]
    messages = [start(content_type), *bodies(chunks(body, split))]
    outcomes, sent = replay(dialect, messages)
    assert sent == messages
    assert b"".join(m["body"] for m in sent[1:]) == body
    assert len(outcomes) == 1
    assert outcomes[0].usage == expected
    assert outcomes[0].status == 200 and outcomes[0].completed


@pytest.mark.parametrize("labelled", [True, False])
@pytest.mark.parametrize("case", ["anthropic-sse-cached", "gemini-array", "openai-responses-json"])
def test_gzip_replies_are_counted_and_passed_on_compressed(case: str, labelled: bool) -> None:
    dialect, content_type, body, expected = CASES[case]
    compressed = gzip.compress(body)
    messages = [start(content_type, encoding="gzip" if labelled else None), *bodies(chunks(compressed, 5))]
    outcomes, sent = replay(dialect, messages)
    assert b"".join(m["body"] for m in sent[1:]) == compressed
    assert outcomes[0].usage == expected


def test_a_deflate_reply_is_counted() -> None:
    dialect, content_type, body, expected = CASES["openai-chat-sse"]
    outcomes, _ = replay(
        dialect, [start(content_type, encoding="deflate"), *bodies(chunks(zlib.compress(body), 9))]
    )
    assert outcomes[0].usage == expected


def test_an_undecodable_encoding_is_passed_on_and_recorded_without_tokens() -> None:
    dialect, content_type, body, _ = CASES["anthropic-sse"]
    outcomes, sent = replay(dialect, [start(content_type, encoding="br"), *bodies([body])])
    assert sent[1]["body"] == body
    assert outcomes[0].usage is None and outcomes[0].completed


def test_an_error_reply_has_its_status_and_no_tokens() -> None:
    error = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}).encode()
    outcomes, _ = replay("anthropic", [start("application/json", status=529), *bodies([error])])
    assert outcomes[0] == ReplyOutcome(
        status=529, usage=None, ttfb=outcomes[0].ttfb, duration=outcomes[0].duration, completed=True
    )


def test_a_stream_cut_short_reports_what_it_saw_when_finished() -> None:
    dialect, content_type, body, _ = CASES["anthropic-sse-cached"]
    cut = body.index(b"event: message_delta")
    outcomes: list[ReplyOutcome] = []

    async def send(message: Any) -> None:
        pass

    async def main() -> None:
        watcher = UsageWatchingSend(send, dialect=dialect, on_finish=outcomes.append)
        await watcher(start(content_type))
        await watcher({"type": "http.response.body", "body": body[:cut], "more_body": True})
        assert outcomes == []
        watcher.finish()
        watcher.finish()

    anyio.run(main)
    assert len(outcomes) == 1
    assert not outcomes[0].completed
    assert outcomes[0].usage == TokenUsage(
        input_tokens=1230, output_tokens=1, cache_read_tokens=1000, cache_creation_tokens=200
    )


def test_no_response_at_all_reports_status_zero() -> None:
    outcomes: list[ReplyOutcome] = []

    async def send(message: Any) -> None:
        raise AssertionError("nothing is sent")

    watcher = UsageWatchingSend(send, dialect="gemini", on_finish=outcomes.append)
    watcher.finish()
    assert outcomes[0].status == 0 and outcomes[0].usage is None and outcomes[0].ttfb is None


def test_ttfb_is_the_first_body_bytes_and_duration_the_end() -> None:
    now = [100.0]
    outcomes: list[ReplyOutcome] = []

    async def send(message: Any) -> None:
        now[0] += 1.0  # each message takes a second to reach the client

    async def main() -> None:
        watcher = UsageWatchingSend(
            send, dialect="chat", on_finish=outcomes.append, clock=lambda: now[0]
        )
        await watcher(start("text/event-stream"))  # 101
        await watcher({"type": "http.response.body", "body": b"", "more_body": True})  # 102: no bytes yet
        await watcher({"type": "http.response.body", "body": b"data: {}\n\n", "more_body": True})  # 103
        await watcher({"type": "http.response.body", "body": b"", "more_body": False})  # 104

    anyio.run(main)
    assert outcomes[0].ttfb == pytest.approx(3.0)
    assert outcomes[0].duration == pytest.approx(4.0)


def test_a_failing_observer_does_not_break_the_reply(caplog: pytest.LogCaptureFixture) -> None:
    def broken(outcome: ReplyOutcome) -> None:
        raise RuntimeError("observer bug")

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def main() -> None:
        watcher = UsageWatchingSend(send, dialect="anthropic", on_finish=broken)
        await watcher(start("application/json"))
        await watcher({"type": "http.response.body", "body": b"{}"})

    anyio.run(main)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert "usage observer failed" in caplog.text


def test_an_unknown_dialect_fails_at_construction() -> None:
    async def send(message: Any) -> None:
        pass

    with pytest.raises(KeyError):
        UsageWatchingSend(send, dialect="smoke-signals", on_finish=lambda outcome: None)
