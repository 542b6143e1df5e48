"""Issue 16 end to end: what the running server counts (ledger, ``/metrics``, ``ampbridge usage``)
equals what the fake replies said, on every route and in every reply shape, and ``/readyz``
follows what the server has learned about its parts."""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
from prometheus_client.parser import text_string_to_metric_families

import ampbridge.runtime
from ampbridge import usage_report
from ampbridge.ledger import default_ledger_path
from ampbridge.standalone import create_app

from .conftest import provider_settings
from .servers import Recorded, RecordingServer, eventually, respond, stream

WORKTREE = Path(__file__).resolve().parents[1]
CLIENT_KEY = "client-key-observability"

# --- replies whose usage the test chooses -------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What a fake reply reports, in the units the ledger keeps (cached tokens included in input)."""

    input: int
    output: int
    cache_read: int = 0
    cache_creation: int = 0


def _sse(events: list[dict[str, Any]], *, named: bool = False) -> list[bytes]:
    chunks = []
    for event in events:
        head = f"event: {event['type']}\n".encode() if named else b""
        chunks.append(head + b"data: " + json.dumps(event).encode() + b"\n\n")
    return chunks


def anthropic_reply(model: str, usage: Usage, streamed: bool) -> list[bytes] | bytes:
    """Anthropic counts cache reads and writes apart from ``input_tokens``; in a stream,
    ``message_delta``'s usage is cumulative (sent twice here: counted once)."""
    uncached = usage.input - usage.cache_read - usage.cache_creation
    cache = {"cache_read_input_tokens": usage.cache_read, "cache_creation_input_tokens": usage.cache_creation}
    if not streamed:
        return json.dumps(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": "OK"}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": uncached, "output_tokens": usage.output, **cache},
            }
        ).encode()
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": []}
    return _sse(
        [
            {
                "type": "message_start",
                "message": {**message, "usage": {"input_tokens": uncached, "output_tokens": 1, **cache}},
            },
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "OK"}},
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": None},
                "usage": {"output_tokens": usage.output - 1},
            },
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"input_tokens": uncached, "output_tokens": usage.output, **cache},
            },
            {"type": "message_stop"},
        ],
        named=True,
    )


def chat_reply(model: str, usage: Usage, streamed: bool) -> list[bytes] | bytes:
    counts = {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read},
    }
    base = {"id": "c1", "created": 0, "model": model}
    if not streamed:
        choice = {"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}
        return json.dumps(
            {**base, "object": "chat.completion", "choices": [choice], "usage": counts}
        ).encode()
    chunk = {**base, "object": "chat.completion.chunk"}
    events = [
        {
            **chunk,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "OK"}, "finish_reason": None}],
            "usage": None,
        },
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {**chunk, "choices": [], "usage": counts},  # stream_options.include_usage
    ]
    return [b"data: " + json.dumps(event).encode() + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


def responses_reply(model: str, usage: Usage, streamed: bool) -> list[bytes] | bytes:
    counts = {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": usage.input + usage.output,
    }
    response = {"id": "resp_1", "object": "response", "created_at": 0, "model": model, "output": []}
    if not streamed:
        return json.dumps({**response, "status": "completed", "usage": counts}).encode()
    return _sse(
        [
            {
                "type": "response.created",
                "sequence_number": 0,
                "response": {**response, "status": "in_progress", "usage": None},
            },
            {
                "type": "response.output_text.delta",
                "sequence_number": 1,
                "item_id": "m",
                "output_index": 0,
                "content_index": 0,
                "delta": "OK",
            },
            {
                "type": "response.completed",
                "sequence_number": 2,
                "response": {**response, "status": "completed", "usage": counts},
            },
        ],
        named=True,
    )


def gemini_reply(model: str, usage: Usage, streamed: bool) -> list[bytes] | bytes:
    """Gemini counts cached tokens inside the prompt and reports thoughts apart from the output."""

    def chunk(text: str, prompt: int, candidates: int, thoughts: int) -> dict[str, Any]:
        return {
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}],
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": candidates,
                "thoughtsTokenCount": thoughts,
                "cachedContentTokenCount": usage.cache_read,
                "totalTokenCount": prompt + candidates + thoughts,
            },
            "modelVersion": model,
        }

    final = chunk("OK", usage.input, usage.output - 2, 2)
    if not streamed:
        return json.dumps(final).encode()
    first = chunk("O", usage.input, 1, 2)  # running totals: the last report is the answer
    return [b"data: " + json.dumps(event).encode() + b"\r\n\r\n" for event in (first, final)]


FORMATS = {
    "anthropic": ("/api/provider/anthropic/v1/messages", anthropic_reply),
    "chat": ("/api/provider/openai/v1/chat/completions", chat_reply),
    "responses": ("/api/provider/openai/v1/responses", responses_reply),
    "gemini": ("/api/provider/google/v1beta/models/{model}:{method}", gemini_reply),
}
# Per format: a model a provider serves (LOCAL), a name mapped to it (MAPPED), one only Amp serves.
MODELS = {
    "anthropic": ("claude-opus-4-7", "house-claude", "claude-remote-1"),
    "chat": ("gpt-5.4", "house-gpt", "gpt-remote-1"),
    "responses": ("gpt-5-mini", "house-gpt-mini", "gpt-remote-2"),
    "gemini": ("gemini-2.5-pro", "house-gemini", "gemini-remote-1"),
}
MAPPINGS = [{"from": mapped, "to": local} for local, mapped, _ in MODELS.values()]
DECISIONS = ("LOCAL", "MAPPED", "AMP_CREDITS")


def usage_answer(server: RecordingServer, sent: list[tuple[str, Usage]]) -> None:
    """Makes ``server`` answer model calls with the usage the request's ``metadata`` names
    (``{"usage": [input, output, cache_read, cache_creation]}``), and records what it sent."""

    async def answer(scope: Any, receive: Any, send: Any, rec: Recorded) -> None:
        payload = rec.json()
        usage = Usage(*payload["metadata"]["usage"])
        path = rec.path
        fmt = next(
            name
            for name, marker in (
                ("anthropic", "/messages"),
                ("chat", "/chat/completions"),
                ("responses", "/responses"),
                ("gemini", ":"),
            )
            if marker in path
        )
        model = payload.get("model") or path.rsplit("/models/", 1)[-1].split(":")[0]
        streamed = bool(payload.get("stream")) or ":streamGenerateContent" in path
        reply = FORMATS[fmt][1](model, usage, streamed)
        sent.append((model, usage))
        if isinstance(reply, bytes):
            await respond(send, 200, reply)
        else:
            await stream(send, reply)

    server.route(lambda method, path: method == "POST" and "/models/gpt" not in path, answer)


def call_model(client: httpx.Client, fmt: str, model: str, usage: Usage, streamed: bool) -> httpx.Response:
    path, _ = FORMATS[fmt]
    metadata = {"usage": [usage.input, usage.output, usage.cache_read, usage.cache_creation]}
    if fmt == "gemini":
        method = "streamGenerateContent" if streamed else "generateContent"
        url = path.format(model=model, method=method) + ("?alt=sse" if streamed else "")
        body: dict[str, Any] = {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "metadata": metadata,
        }
    else:
        url = path
        body = {"model": model, "stream": streamed, "metadata": metadata}
        body.update({"max_tokens": 50, "messages": []} if fmt == "anthropic" else {})
        body.update({"messages": []} if fmt == "chat" else {})
        body.update({"input": "hi"} if fmt == "responses" else {})
    return client.post(url, json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"})


# --- reading back what the server counted -------------------------------------------------


def ledger_rows() -> list[sqlite3.Row]:
    path = default_ledger_path()
    if not path.exists():
        return []
    with sqlite3.connect(path) as connection:
        connection.row_factory = sqlite3.Row
        try:
            return connection.execute("SELECT * FROM calls ORDER BY id").fetchall()
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def metric_samples(url: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reply = httpx.get(f"{url}/metrics", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def moved(
    before: dict[Any, float], after: dict[Any, float], name: str
) -> dict[tuple[tuple[str, str], ...], float]:
    """How much each series of ``name`` moved between two scrapes (series that did not move left out)."""
    changes = {}
    for (sample, labels), value in after.items():
        if sample == name and value != before.get((sample, labels), 0.0):
            changes[labels] = value - before.get((sample, labels), 0.0)
    return changes


def bridge_settings(backends: dict[str, RecordingServer], upstream: RecordingServer, **extra: Any) -> Any:
    return provider_settings(
        backends, amp_upstream_url=upstream.url, amp_model_mappings=MAPPINGS, api_keys=[CLIENT_KEY], **extra
    )


# --- the tests ----------------------------------------------------------------------------


def test_tokens_of_every_format_and_route_reach_the_ledger_and_metrics(backends, upstream, bridge):
    sent: list[tuple[str, Usage]] = []
    for server in (*backends.values(), upstream):
        usage_answer(server, sent)
    server = bridge(bridge_settings(backends, upstream))
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    before = metric_samples(server.url, **auth)

    expected: list[tuple[str, str, str, int, int, int, int]] = []
    number = 0
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for fmt, (local, mapped, remote) in MODELS.items():
            for decision, model in zip(DECISIONS, (local, mapped, remote), strict=True):
                for streamed in (False, True):
                    number += 1
                    usage = Usage(input=100 * number + 40, output=10 + number, cache_read=3 * number)
                    if fmt == "anthropic":
                        usage = Usage(usage.input, usage.output, usage.cache_read, cache_creation=number)
                    reply = call_model(client, fmt, model, usage, streamed)
                    assert reply.status_code == 200, (fmt, decision, streamed, reply.text)
                    served = local if decision == "MAPPED" else model
                    expected.append(
                        (
                            decision,
                            model,
                            served,
                            usage.input,
                            usage.output,
                            usage.cache_read,
                            usage.cache_creation,
                        )
                    )
    assert len(sent) == len(expected) == 24
    assert Counter(s for s, _ in sent) == Counter(
        row[2] for row in expected
    )  # every call was answered by a fake
    assert sum(1 for r in upstream.requests if r.path.startswith("/api/provider/")) == 8

    rows = eventually(lambda: (found := ledger_rows()) and len(found) >= 24 and found, timeout=10)
    recorded = [
        (
            r["decision"],
            r["requested_model"],
            r["served_model"],
            r["input_tokens"],
            r["output_tokens"],
            r["cache_read_tokens"],
            r["cache_creation_tokens"],
        )
        for r in rows
    ]
    assert Counter(recorded) == Counter(expected)
    assert {r["status"] for r in rows} == {200}
    assert all(r["client"].startswith("key-") and CLIENT_KEY not in r["client"] for r in rows)

    after = metric_samples(server.url, **auth)
    for name, column in (
        ("ampbridge_input_tokens_total", 3),
        ("ampbridge_output_tokens_total", 4),
        ("ampbridge_cache_read_tokens_total", 5),
        ("ampbridge_cache_creation_tokens_total", 6),
    ):
        want: Counter[tuple[tuple[str, str], ...]] = Counter()
        for row in expected:
            if row[column]:
                want[(("decision", row[0]), ("model", row[1]))] += row[column]
        assert moved(before, after, name) == dict(want), name
    calls = moved(before, after, "ampbridge_model_calls_total")
    assert sum(calls.values()) == 24
    per_decision: Counter[str] = Counter()
    for labels, value in calls.items():
        assert dict(labels)["status"] == "200"
        per_decision[dict(labels)["decision"]] += value
    assert per_decision == {"LOCAL": 8, "MAPPED": 8, "AMP_CREDITS": 8}
    durations = moved(before, after, "ampbridge_model_call_duration_seconds_count")
    assert {dict(labels)["decision"]: value for labels, value in durations.items()} == per_decision
    requests = moved(before, after, "ampbridge_requests_total")
    assert requests[(("route_kind", "model"), ("status", "200"))] == 24


def test_usage_json_reports_the_calls_made(backends, upstream, bridge, capsys):
    sent: list[tuple[str, Usage]] = []
    for server in (*backends.values(), upstream):
        usage_answer(server, sent)
    server = bridge(bridge_settings(backends, upstream))
    calls = [  # (format, decision index, usage)
        ("anthropic", 0, Usage(150, 20, 30, 20)),
        ("chat", 1, Usage(70, 7, 5)),
        ("gemini", 0, Usage(40, 9, 0)),
        ("responses", 2, Usage(300, 30, 100)),
    ]
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for fmt, route, usage in calls:
            assert call_model(client, fmt, MODELS[fmt][route], usage, streamed=True).status_code == 200
        missing = client.post(  # a call nobody serves on a local-only route: an error row
            "/api/provider/anthropic/v1/messages",
            json={
                "model": "claude-remote-9",
                "max_tokens": 1,
                "messages": [],
                "metadata": {"usage": [1, 1, 0, 0]},
            },
            headers={"Authorization": "Bearer wrong-key"},
        )
    assert missing.status_code == 401  # refused before it is a model call: no row
    assert eventually(lambda: len(ledger_rows()) == 4, timeout=10)

    parser = argparse.ArgumentParser(prog="ampbridge")
    usage_report.register(parser.add_subparsers())
    args = parser.parse_args(["usage", "--json", "--since", "1h", "--db", str(default_ledger_path())])
    assert args.run(args) == 0
    report = json.loads(capsys.readouterr().out)

    local = [u for _, route, u in calls if route in (0, 1)]
    credits = [u for _, route, u in calls if route == 2]

    def tokens(usages: list[Usage]) -> dict[str, int]:
        return {
            "input": sum(u.input for u in usages),
            "output": sum(u.output for u in usages),
            "cache_read": sum(u.cache_read for u in usages),
            "cache_creation": sum(u.cache_creation for u in usages),
        }

    total = report["total"]
    assert report["by"] == "decision" and report["ledger"] == str(default_ledger_path())
    assert total["calls"] == 4 and total["errors"] == 0
    assert total["tokens"] == tokens([u for _, _, u in calls])
    assert total["local"] == {"calls": 3, "tokens": tokens(local)}
    assert total["amp_credits"] == {"calls": 1, "tokens": tokens(credits)}
    assert total["latency_ms"]["p50"] is not None and total["latency_ms"]["p50"] <= total["latency_ms"]["p95"]
    groups = {group["key"]: group for group in report["groups"]}
    assert {key: group["calls"] for key, group in groups.items()} == {
        "LOCAL": 2,
        "MAPPED": 1,
        "AMP_CREDITS": 1,
    }
    assert groups["MAPPED"]["tokens"] == tokens([calls[1][2]])

    args = parser.parse_args(["usage", "--json", "--by", "model", "--db", str(default_ledger_path())])
    assert args.run(args) == 0
    by_model = {group["key"]: group["calls"] for group in json.loads(capsys.readouterr().out)["groups"]}
    assert by_model == {"claude-opus-4-7": 1, "gpt-5.4": 1, "gemini-2.5-pro": 1, "gpt-remote-2": 1}


def test_metrics_are_for_a_loopback_peer_with_a_client_key(backends, upstream, bridge):
    server = bridge(bridge_settings(backends, upstream))
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{server.url}/metrics", headers={"x-api-key": CLIENT_KEY}).status_code == 200

    app = create_app(settings=bridge_settings(backends, upstream), environ={}, configure_logs=False)

    async def scrape(peer: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/metrics", headers={"Authorization": f"Bearer {CLIENT_KEY}"})

    async def scrape_from_both() -> tuple[httpx.Response, httpx.Response]:
        try:
            return await scrape("192.0.2.7"), await scrape("127.0.0.1")
        finally:
            await app.runtime.aclose()

    remote, local = anyio.run(scrape_from_both)
    assert remote.status_code == 403
    assert "ampbridge_" not in remote.text
    assert local.status_code == 200 and "ampbridge_requests_total" in local.text


def test_a_thousand_concurrent_calls_leave_a_thousand_rows_while_the_database_is_locked(
    backends, upstream, bridge
):
    server = bridge(bridge_settings(backends, upstream))
    ledger = server.standalone.runtime.services.ledger  # type: ignore[attr-defined]
    ledger.retry_interval = 0.2  # the lock below makes the writer back off; do not wait 30 s to retry
    with httpx.Client(base_url=server.url) as client:  # the ledger file and its table exist
        assert call_model(client, "chat", "gpt-5.4", Usage(1, 1), False).status_code == 200
    assert eventually(lambda: len(ledger_rows()) == 1, timeout=10)

    blocker = sqlite3.connect(default_ledger_path(), timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # no other connection can write until this ends
    statuses: list[int] = []

    async def run_all() -> None:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as client:

            async def one(number: int) -> None:
                reply = await client.post(
                    "/api/provider/openai/v1/chat/completions",
                    json={"model": "gpt-5.4", "messages": [], "metadata": {"n": number}},
                    headers={"Authorization": f"Bearer {CLIENT_KEY}"},
                )
                statuses.append(reply.status_code)

            async with anyio.create_task_group() as tasks:
                for number in range(1000):
                    tasks.start_soon(one, number)

    anyio.run(run_all)
    assert statuses == [200] * 1000  # every call answered while the ledger could not be written
    assert len(ledger_rows()) == 1  # (the database really was locked)
    blocker.rollback()
    blocker.close()
    assert eventually(lambda: len(ledger_rows()) == 1001, timeout=30)
    assert ledger.dropped == 0


def without_permission_override() -> None:
    """In the child: give up root's power to write where permissions say no."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


READ_ONLY_SERVER = textwrap.dedent(
    """
    import json, logging, sys
    import httpx
    from ampbridge.settings import Settings
    from ampbridge.standalone import create_app
    from tests.servers import ServerThread, eventually
    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    logging.getLogger("ampbridge").addHandler(Keep())
    logging.getLogger("ampbridge").setLevel(logging.INFO)
    settings = Settings(**json.loads(sys.argv[1]))
    app = create_app(settings=settings, environ={}, configure_logs=False)
    with ServerThread(app) as server:
        app.runtime.services.ledger.retry_interval = 0.1
        statuses = []
        for number in range(5):
            reply = httpx.post(server.url + "/api/provider/openai/v1/chat/completions",
                               json={"model": "gpt-5.4", "messages": []})
            statuses.append(reply.status_code)
            eventually(lambda: any("cannot be written" in line for line in lines))
        ledger = app.runtime.services.ledger
        eventually(lambda: len(ledger.queue) == 5)
        print(json.dumps({"statuses": statuses, "queued": len(ledger.queue), "lines": lines}))
    """
)


def test_a_read_only_data_directory_does_not_fail_calls(backends, tmp_path):
    data = Path(os.environ["XDG_DATA_HOME"]) / "ampbridge"
    data.mkdir(parents=True)
    data.chmod(0o555)
    settings = {
        "providers": [
            {
                "name": "gpt",
                "type": "openai",
                "base-url": backends["openai"].url + "/v1",
                "api-key": "k",
                "models": ["gpt-5.4"],
            }
        ]
    }
    try:
        result = subprocess.run(
            [sys.executable, "-c", READ_ONLY_SERVER, json.dumps(settings)],
            cwd=WORKTREE,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
            preexec_fn=without_permission_override if os.geteuid() == 0 else None,
        )
    finally:
        data.chmod(0o755)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["statuses"] == [200] * 5
    assert report["queued"] == 5  # kept in memory for when the place is writable
    assert len([line for line in report["lines"] if "cannot be written" in line]) == 1
    assert not default_ledger_path().exists()


def test_readyz_waits_for_the_upstream_and_every_backend(backends, upstream, bridge, monkeypatch):
    monkeypatch.setattr(ampbridge.runtime, "DISCOVERY_RETRY_SECONDS", 0.2)
    listing_fails = True

    async def gemini_list(scope: Any, receive: Any, send: Any, rec: Recorded) -> None:
        if listing_fails:
            await respond(send, 503, b'{"error":"warming up"}')
        else:
            await respond(send, 200, json.dumps({"models": [{"name": "models/gemini-2.5-pro"}]}).encode())

    backends["google"].route(lambda method, path: method == "GET" and path.endswith("/models"), gemini_list)
    server = bridge(provider_settings(backends, amp_upstream_url=upstream.url))

    first = httpx.get(f"{server.url}/readyz")
    assert first.status_code == 503
    assert first.headers["cache-control"] == "no-store"
    report = first.json()
    assert report["ready"] is False
    assert report["upstream"]["ok"] is False
    assert report["backends"]["claude"]["ok"] is True and report["backends"]["gemini"]["ok"] is False
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # liveness is another question

    assert httpx.get(f"{server.url}/api/user").status_code == 200  # the upstream answered
    after_upstream = httpx.get(f"{server.url}/readyz")
    assert after_upstream.status_code == 503
    assert after_upstream.json()["upstream"]["ok"] is True

    listing_fails = False  # the next discovery round finds Gemini's models
    ready = eventually(
        lambda: (reply := httpx.get(f"{server.url}/readyz")).status_code == 200 and reply, timeout=10
    )
    assert ready and ready.json()["backends"]["gemini"]["ok"] is True
    reply = httpx.post(
        f"{server.url}/api/provider/google/v1beta/models/gemini-2.5-pro:generateContent",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
    )
    assert reply.status_code == 200 and reply.headers["x-served-by"] == "google-backend"


def test_an_upstream_that_stops_answering_makes_readyz_503(backends, upstream, bridge):
    server = bridge(provider_settings(backends, amp_upstream_url=upstream.url))
    assert httpx.get(f"{server.url}/api/user").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200

    async def broken(scope: Any, receive: Any, send: Any, rec: Recorded) -> None:
        await respond(send, 502, b"bad gateway", content_type="text/plain")

    upstream.route(lambda method, path: path == "/api/user", broken)
    assert httpx.get(f"{server.url}/api/user").status_code == 502
    reply = httpx.get(f"{server.url}/readyz")
    assert reply.status_code == 503
    assert reply.json()["upstream"] == {**reply.json()["upstream"], "ok": False, "detail": "status 502"}
    errors = metric_samples(server.url)
    assert errors[("ampbridge_upstream_errors_total", (("kind", "status_502"),))] == 1


def test_ledger_logging_names_no_key(caplog, backends, upstream, bridge):
    caplog.set_level(logging.INFO)
    server = bridge(bridge_settings(backends, upstream))
    with httpx.Client(base_url=server.url) as client:
        assert call_model(client, "chat", "gpt-5.4", Usage(5, 5), False).status_code == 200
    assert eventually(lambda: len(ledger_rows()) == 1, timeout=10)
    assert CLIENT_KEY not in caplog.text
    assert CLIENT_KEY not in json.dumps([dict(row) for row in ledger_rows()])
