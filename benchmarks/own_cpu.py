"""Microseconds of ampbridge's own per-request work, piece by piece, outside any HTTP transport.

Run:  python -m benchmarks.own_cpu [--repeat 5]

Each piece is timed in-process on the replies ``fake_backend`` sends (and on a realistic
Anthropic reply and stream that carry token usage), with a ``send`` that does nothing, so the
numbers are the CPU ampbridge adds per request on top of its HTTP stacks. A py-spy profile under
load counts wall-clock samples on a shared core, which inflates anything that makes a system
call (a ``stat``, a log line's write); these numbers do not. The best of ``--repeat`` runs is
printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ampbridge.accounting import ReplyOutcome, UsageWatchingSend
from ampbridge.call_watch import CallWatch
from ampbridge.fallback import ModelCall, _log_decision
from ampbridge.headers import response_headers
from ampbridge.ledger import UsageLedger, UsageRow
from ampbridge.logs import RedactSecrets, redact
from ampbridge.mapping import RouteDecision
from ampbridge.metrics import Metrics
from ampbridge.models import WireFormat
from ampbridge.provider_alias import ProviderCall
from ampbridge.rewrite import ResponseFixer, RewritingSend
from ampbridge.routes import CallKind, Endpoint
from ampbridge.secrets import AmpSecretsFile

from .fake_backend import EVENT, JSON_HEADERS, REPLY, STREAM_HEADERS

USAGE_REPLY = json.dumps(
    {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "OK, done. " * 20}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1200, "cache_read_input_tokens": 30000, "output_tokens": 80},
    }
).encode()
USAGE_STREAM = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
    b'"role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":1200,'
    b'"cache_read_input_tokens":30000,"output_tokens":1}}}\n\n',
    *[EVENT] * 48,
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},'
    b'"usage":{"output_tokens":80}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]
# What a Go or nginx backend sends, as httpx keeps it (canonical case).
BACKEND_HEADERS = [
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"120"),
    (b"Date", b"Wed, 25 Nov 2026 18:00:00 GMT"),
    (b"Server", b"uvicorn"),
    (b"Request-Id", b"req_011CUxyz"),
    (b"Anthropic-Organization-Id", b"8d2a"),
    (b"Cf-Ray", b"9a1b2c3d4e5f-AMS"),
]
CALL = ProviderCall(
    provider="anthropic",
    kind=CallKind.MODEL,
    wire_format=WireFormat.ANTHROPIC,
    endpoint=Endpoint.MESSAGES,
    local_path="/v1/messages",
    path_model=None,
    action=None,
    original_path="/api/provider/anthropic/v1/messages",
    original_raw_path=b"/api/provider/anthropic/v1/messages",
    original_root_path="",
    local_raw_path=b"/v1/messages",
)


async def _nothing(message: Any) -> None:
    return None


def _reply(headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"type": "http.response.start", "status": 200, "headers": headers}]
    for index, chunk in enumerate(chunks):
        messages.append({"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1})
    return messages


def _drive(make_send: Callable[[], Any], messages: list[dict[str, Any]], loops: int) -> float:
    async def run() -> float:
        started = time.process_time()
        for _ in range(loops):
            send = make_send()
            for message in messages:
                await send(message)
            finish = getattr(send, "finish", None)
            if finish is not None:
                result = finish()
                if asyncio.iscoroutine(result):
                    await result
        return time.process_time() - started

    return asyncio.run(run())


def _timed(function: Callable[[], object], loops: int) -> float:
    started = time.process_time()
    for _ in range(loops):
        function()
    return time.process_time() - started


def _pieces(workdir: Path) -> dict[str, Callable[[int], float]]:
    json_reply = _reply(JSON_HEADERS, [REPLY])
    usage_reply = _reply([(b"content-type", b"application/json")], [USAGE_REPLY])
    fake_stream = _reply(STREAM_HEADERS, [EVENT] * 50 + [b""])
    usage_stream = _reply(STREAM_HEADERS, [*USAGE_STREAM, b""])
    metrics = Metrics()
    ledger = UsageLedger(workdir / "usage.db", capacity=10**9)
    watch = CallWatch(metrics, ledger)
    model_call = ModelCall(
        decision=RouteDecision.LOCAL,
        provider="anthropic",
        requested="claude-sonnet-4-5",
        served="claude-sonnet-4-5",
        dialect="anthropic",
        client_key=None,
    )

    class PassOn:
        """The harness's own cost: a ``send`` wrapper that only passes messages on."""

        def __init__(self, send: Any) -> None:
            self.send = send

        async def __call__(self, message: Any) -> None:
            await self.send(message)

    ledger_rows = [
        UsageRow.of_call(
            ReplyOutcome(status=200, usage=None, ttfb=0.001, duration=0.002, completed=True),
            decision="LOCAL",
            client="-",
            provider="anthropic",
            requested_model="claude-sonnet-4-5",
            served_model="claude-sonnet-4-5",
            time=time.time(),
        )
    ] * 500
    writer = UsageLedger(workdir / "writes.db")

    def usage(messages: list[dict[str, Any]]) -> Callable[[int], float]:
        return lambda loops: _drive(
            lambda: UsageWatchingSend(_nothing, dialect="anthropic", on_finish=lambda outcome: None),
            messages,
            loops,
        )

    def fixes(messages: list[dict[str, Any]]) -> Callable[[int], float]:
        def make() -> RewritingSend:
            fixer = ResponseFixer(
                wire_format=WireFormat.ANTHROPIC, requested_model=None, tool_names={"bash": "Bash"}
            )
            return RewritingSend(_nothing, fixer, max_json_size=1 << 24)

        return lambda loops: _drive(make, messages, loops)

    secrets_path = workdir / "secrets.json"
    secrets_path.write_text(json.dumps({"apiKey@https://ampcode.com/": "sgamp_user_0123456789"}))
    secrets = AmpSecretsFile(secrets_path, "https://ampcode.com")

    log_stream = (workdir / "log.txt").open("w")
    handler = logging.StreamHandler(log_stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    for name in ("ampbridge", "uvicorn"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    access = logging.getLogger("uvicorn.access")
    access_args = ("127.0.0.1:51234", "POST", "/api/provider/anthropic/v1/messages", "1.1", 200)

    return {
        "harness floor: pass-on send, fake JSON reply": lambda loops: _drive(
            lambda: PassOn(_nothing), json_reply, loops
        ),
        "harness floor: pass-on send, fake SSE (50 events)": lambda loops: _drive(
            lambda: PassOn(_nothing), fake_stream, loops
        ),
        "UsageWatchingSend, fake JSON reply": usage(json_reply),
        "UsageWatchingSend, JSON reply with usage": usage(usage_reply),
        "UsageWatchingSend, fake SSE (50 events)": usage(fake_stream),
        "UsageWatchingSend, SSE with usage (51 events)": usage(usage_stream),
        "CallWatch on_finish (metrics + ledger row)": lambda loops: _drive(
            lambda: watch(model_call, _nothing), json_reply, loops
        ),
        "RewritingSend, fake JSON reply": fixes(json_reply),
        "RewritingSend, JSON reply with usage": fixes(usage_reply),
        "RewritingSend, fake SSE (50 events)": fixes(fake_stream),
        "routing line (_log_decision, LOCAL)": lambda loops: _timed(
            lambda: _log_decision(
                RouteDecision.LOCAL, CALL, "bench-local", "bench-local", 200, 0.001, ("127.0.0.1", 50000)
            ),
            loops,
        ),
        "routing line (_log_decision, AMP_CREDITS)": lambda loops: _timed(
            lambda: _log_decision(
                RouteDecision.AMP_CREDITS, CALL, "claude-x", None, 200, 0.001, ("127.0.0.1", 50000)
            ),
            loops,
        ),
        "uvicorn access line": lambda loops: _timed(
            lambda: access.info('%s - "%s %s HTTP/%s" %d', *access_args), loops
        ),
        "redact(access line text)": lambda loops: _timed(
            lambda: redact('127.0.0.1:51234 - "POST /api/provider/anthropic/v1/messages HTTP/1.1" 200'), loops
        ),
        "AmpSecretsFile.key()": lambda loops: _timed(secrets.key, loops),
        "response_headers (7 canonical-case headers)": lambda loops: _timed(
            lambda: response_headers(BACKEND_HEADERS), loops
        ),
        "Metrics.observe_request": lambda loops: _timed(lambda: metrics.observe_request("model", 200), loops),
        "UsageLedger write, per row (batches of 500, worker thread's CPU)": lambda loops: (
            _timed(lambda: writer._write(ledger_rows), max(1, loops // 500))
            * loops
            / max(1, loops // 500)
            / 500
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--loops", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        for name, piece in _pieces(Path(workdir)).items():
            piece(args.loops // 10)  # warm up
            best = min(piece(args.loops) for _ in range(args.repeat))
            print(f"{1e6 * best / args.loops:9.2f} µs  {name}", flush=True)


if __name__ == "__main__":
    main()
