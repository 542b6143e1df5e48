"""``Speculation`` alone: a large body handed on piece by piece, its end held until the whole
body is checked, and nothing passed on or sent once the check refutes the route."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ampbridge import AmpFallback, ProviderAlias
from ampbridge.backends import LocalBackends
from ampbridge.http_client import SharedClient
from ampbridge.models import WireFormat
from ampbridge.request_body import RequestBody
from ampbridge.routes import Endpoint
from ampbridge.settings import ProviderConfig
from ampbridge.speculation import LEADING_BYTES, SPECULATE_ABOVE, Refuted, Speculation

PIECE = 256 * 1024


def body_of(model_member: bytes, size: int = 3 * SPECULATE_ABOVE, tail: bytes = b"") -> bytes:
    head = b"{" + model_member + b', "messages": [], "metadata": {"pad": "'
    end = b'"}' + tail + b"}"
    return head + b"x" * (size - len(head) - len(end)) + end


class Client:
    """The client's side of ``receive``: the body in pieces, then a disconnect; it records how
    far it was read when each check ran."""

    def __init__(self, body: bytes, piece: int = PIECE, *, gone_after: int | None = None) -> None:
        self.pieces = [body[i : i + piece] for i in range(0, len(body), piece)]
        self.read = 0
        self.gone_after = gone_after

    async def __call__(self) -> dict[str, Any]:
        if self.gone_after is not None and self.read >= self.gone_after:
            return {"type": "http.disconnect"}
        if self.read >= len(self.pieces):
            await asyncio.Event().wait()  # a client that stays: no disconnect comes
        self.read += 1
        return {
            "type": "http.request",
            "body": self.pieces[self.read - 1],
            "more_body": self.read < len(self.pieces),
        }


def speculation_of(body: bytes, client: Client) -> Speculation:
    scope = {"type": "http", "headers": [(b"content-length", b"%d" % len(body))]}
    speculation = Speculation.of(scope, client, limit=64 << 20)
    assert speculation is not None
    return speculation


def check_result(result: bool, seen: list[bytes]):
    """A check answering ``result`` that records the bytes it was shown (without taking them)."""

    async def check(body: RequestBody) -> bool:
        found = body.raw_member("messages")
        assert found is not None
        seen.append(found[0])
        return result

    return check


async def drain(speculation: Speculation) -> list[dict[str, Any]]:
    """What the next hop receives, to the body's end."""
    messages = []
    while not messages or messages[-1]["more_body"]:
        messages.append(await speculation.receive())
    return messages


def test_the_leading_model_is_read_from_the_first_piece_and_every_byte_is_handed_on_in_order():
    async def main() -> None:
        body = body_of(b' "model" : "claude-\\u00e9"')
        client = Client(body)
        speculation = speculation_of(body, client)
        assert await speculation.leading_model() == "claude-é"
        assert client.read == 1  # one piece was enough
        seen: list[bytes] = []
        speculation.check = check_result(True, seen)
        messages = await drain(speculation)
        assert b"".join(m["body"] for m in messages) == body
        assert [m["more_body"] for m in messages] == [True] * (len(messages) - 1) + [False]
        assert seen == [body]  # the check saw the whole body, once
        assert speculation.confirmed is True

    asyncio.run(main())


def test_the_piece_that_completes_the_body_is_held_until_the_check_has_run():
    async def main() -> None:
        body = body_of(b'"model": "m"')
        client = Client(body)
        speculation = speculation_of(body, client)
        await speculation.leading_model()
        handed = 0
        checked_at: list[int] = []

        async def check(whole: RequestBody) -> bool:
            checked_at.append(handed)
            return True

        speculation.check = check
        more = True
        while more:
            message = await speculation.receive()
            handed += len(message["body"])
            more = message["more_body"]
        assert handed == len(body)
        assert checked_at and checked_at[0] < len(body)
        assert len(body) - checked_at[0] == len(client.pieces[-1])  # only the last piece waited

    asyncio.run(main())


def test_a_refuted_route_raises_instead_of_handing_on_the_end_and_keeps_the_whole_body():
    async def main() -> None:
        body = body_of(b'"model": "local"', tail=b', "model": "remote"')
        speculation = speculation_of(body, Client(body))
        assert await speculation.leading_model() == "local"
        seen: list[bytes] = []
        speculation.check = check_result(False, seen)
        handed = b""
        with pytest.raises(Refuted):
            while True:
                handed += (await speculation.receive())["body"]
        assert len(handed) < len(body) and body.startswith(handed)
        with pytest.raises(Refuted):  # and again: the route stays refuted
            await speculation.receive()
        assert speculation.confirmed is False
        assert (await speculation.whole()).take_bytes() == body

    asyncio.run(main())


def test_an_early_reply_waits_for_the_rest_of_the_body_and_passes_once_confirmed():
    async def main() -> None:
        body = body_of(b'"model": "m"')
        client = Client(body)
        speculation = speculation_of(body, client)
        await speculation.leading_model()
        speculation.check = check_result(True, [])
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            assert client.read == len(client.pieces), "nothing is sent before the body is in"
            sent.append(message)

        first = await speculation.receive()
        await speculation.gate(send)({"type": "http.response.start", "status": 401})
        assert sent == [{"type": "http.response.start", "status": 401}]
        rest = await drain(speculation)  # the next hop may still read the body: it gets it all
        assert first["body"] + b"".join(m["body"] for m in rest) == body

    asyncio.run(main())


def test_an_early_reply_of_a_refuted_route_is_never_sent():
    async def main() -> None:
        body = body_of(b'"model": "m"')
        speculation = speculation_of(body, Client(body))
        await speculation.leading_model()
        speculation.check = check_result(False, [])
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        with pytest.raises(Refuted):
            await speculation.gate(send)({"type": "http.response.start", "status": 401})
        assert sent == []
        assert await speculation.settled() is False
        assert (await speculation.whole()).take_bytes() == body

    asyncio.run(main())


@pytest.mark.parametrize(
    ("start", "why"),
    [
        (b'{"max_tokens": 1, "model": "m", "pad": "', "model is not the first member"),
        (b'{"model": 7, "pad": "', "the model is not a string"),
        (b'{"model": "", "pad": "', "the model is empty"),
        (b'{"m\\u006fdel": "m", "pad": "', "the key is escaped: the full scan decides"),
        (b'["model", "m", "', "not an object"),
        (b'{"model": "' + b"m" * LEADING_BYTES, "the model is longer than the leading bytes"),
    ],
)
def test_no_leading_model_means_no_speculation_and_the_whole_body_is_read(start: bytes, why: str):
    async def main() -> None:
        body = start + b"x" * (2 * SPECULATE_ABOVE) + b'"}'
        speculation = speculation_of(body, Client(body))
        assert await speculation.leading_model() is None, why
        assert (await speculation.whole()).take_bytes() == body

    asyncio.run(main())


def test_a_body_that_arrives_in_its_first_pieces_is_not_speculated():
    async def main() -> None:
        body = body_of(b'"model": "m"')
        speculation = speculation_of(body, Client(body, piece=len(body)))
        assert await speculation.leading_model() is None
        assert (await speculation.whole()).take_bytes() == body

    asyncio.run(main())


def test_a_client_that_goes_away_mid_body_stops_the_next_hop_reading():
    async def main() -> None:
        from ampbridge.proxy import ClientDisconnected

        body = body_of(b'"model": "m"')
        speculation = speculation_of(body, Client(body, gone_after=3))
        await speculation.leading_model()
        speculation.check = check_result(True, [])
        with pytest.raises(ClientDisconnected):
            await drain(speculation)
        with pytest.raises(ClientDisconnected):
            await speculation.settled()

    asyncio.run(main())


def test_only_large_bodies_of_an_allowed_declared_length_are_speculated():
    def scope(length: bytes | None) -> dict[str, Any]:
        return {"type": "http", "headers": [] if length is None else [(b"content-length", length)]}

    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    assert Speculation.of(scope(None), receive, 64 << 20) is None  # chunked: length unknown
    assert Speculation.of(scope(b"%d" % SPECULATE_ABOVE), receive, 64 << 20) is None
    assert Speculation.of(scope(b"%d" % (SPECULATE_ABOVE + 1)), receive, 64 << 20) is not None
    assert Speculation.of(scope(b"%d" % (SPECULATE_ABOVE + 1)), receive, SPECULATE_ABOVE) is None
    assert Speculation.of(scope(b"junk"), receive, 64 << 20) is None


def test_the_checked_body_is_what_json_reads():
    async def main() -> None:
        body = body_of(b'"model": "m"', tail=b', "model": "m"')
        speculation = speculation_of(body, Client(body))
        await speculation.leading_model()
        models: list[Any] = []

        async def check(whole: RequestBody) -> bool:
            models.append((await whole.scan()).model)
            models.append(json.loads(whole.take_bytes())["model"])
            return True

        speculation.check = check
        await drain(speculation)
        assert models == ["m", "m"]

    asyncio.run(main())


# --- which calls are sent on while they arrive ------------------------------------------------


def local_backends(tmp_path) -> LocalBackends:
    providers = [
        {"name": "claude", "type": "anthropic", "base-url": "http://127.0.0.1:1", "models": [
            "claude-plain", {"name": "claude-upstream-name", "alias": "claude-alias"}]},
        {"name": "gpt", "type": "openai", "base-url": "http://127.0.0.1:1/v1", "models": ["gpt-plain"]},
        {"name": "plan", "type": "chatgpt", "models": ["gpt-plan"]},
    ]  # fmt: skip
    configs = [ProviderConfig.model_validate(entry) for entry in providers]
    return LocalBackends(configs, client=SharedClient(), max_body_size=64 << 20, chatgpt_dir=tmp_path)


@pytest.mark.parametrize(
    ("model", "wire_format", "endpoint", "streamed"),
    [
        ("claude-plain", WireFormat.ANTHROPIC, Endpoint.MESSAGES, True),
        ("claude-plain(high)", WireFormat.ANTHROPIC, Endpoint.MESSAGES, True),  # the bytes go as they are
        ("gpt-plain", WireFormat.OPENAI, Endpoint.RESPONSES, True),
        ("claude-alias", WireFormat.ANTHROPIC, Endpoint.MESSAGES, False),  # renamed in the body
        ("gpt-plain", WireFormat.ANTHROPIC, Endpoint.MESSAGES, False),  # translated
        ("gpt-plan", WireFormat.OPENAI, Endpoint.RESPONSES, False),  # a ChatGPT plan reads it whole
        ("nobody-serves-it", WireFormat.ANTHROPIC, Endpoint.MESSAGES, False),
    ],
)
def test_local_backends_stream_only_calls_sent_on_unchanged(tmp_path, model, wire_format, endpoint, streamed):
    assert local_backends(tmp_path).streams_body(model, wire_format, endpoint) is streamed


def model_scope(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": "/provider/anthropic/v1/messages",
        "raw_path": b"/provider/anthropic/v1/messages",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")],
    }


class FirstMessage:
    """A local app that answers with what its first ``receive`` gave: how much, and whether more
    was to come."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        first = await receive()
        size, more = len(first["body"]), first["more_body"]
        while first["more_body"]:
            first = await receive()
        answer = json.dumps({"first": size, "more": more}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})


class StreamingModels:
    def serves(self, model: str, wire_format: WireFormat) -> bool:
        return model == "m"

    def streams_body(self, model: str, wire_format: WireFormat, endpoint: Endpoint) -> bool:
        return True


class Watched:
    """A call watcher's ``send``: passes the reply on, ``finished`` when the call ends."""

    def __init__(self, send: Any, finished: Any) -> None:
        self.send = send
        self.finish = finished

    async def __call__(self, message: Any) -> None:
        await self.send(message)


async def read_then_answer(scope: Any, receive: Any, send: Any) -> None:
    """A next hop that reads the whole body, then answers 200 ``{}``."""
    more = True
    while more:
        more = (await receive())["more_body"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.parametrize(("local_models", "streamed"), [(["m"], False), (StreamingModels(), True)])
def test_the_local_app_gets_the_body_as_it_arrives_only_when_it_says_it_streams_it(local_models, streamed):
    async def main() -> dict[str, Any]:
        body = body_of(b'"model": "m"')
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        app = ProviderAlias(AmpFallback(FirstMessage(), local_models=local_models), prefix="/provider/")
        await app(model_scope(body), Client(body), send)
        assert sent[0]["status"] == 200
        return json.loads(sent[1]["body"]) | {"size": len(body)}

    answer = asyncio.run(main())
    if streamed:
        assert answer["more"] is True and answer["first"] < answer["size"]
    else:
        assert answer == {"first": answer["size"], "more": False, "size": answer["size"]}


def test_a_chunked_request_is_not_speculated_whatever_its_length_says():
    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    headers = [(b"content-length", b"%d" % (2 * SPECULATE_ABOVE)), (b"transfer-encoding", b"chunked")]
    assert Speculation.of({"type": "http", "headers": headers}, receive, 64 << 20) is None


def test_a_reply_sent_before_the_body_ends_still_gets_the_tool_name_fix():
    """The local app answers after the first piece; the body's ``tools``, at its end, still fix
    the reply's tool name: the reply waits for the whole body before the fixes see it."""
    reply = {"type": "message", "content": [{"type": "tool_use", "id": "t", "name": "read", "input": {}}]}

    async def early_answer(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(reply).encode()})

    async def main() -> list[dict[str, Any]]:
        body = body_of(b'"model": "m"', tail=b', "tools": [{"name": "Read", "input_schema": {}}]')
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        app = ProviderAlias(AmpFallback(early_answer, local_models=StreamingModels()), prefix="/provider/")
        await app(model_scope(body), Client(body), send)
        return sent

    sent = asyncio.run(main())
    assert sent[0]["status"] == 200
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:]))["content"][0]["name"] == "Read"


def test_a_refuted_call_is_watched_once_as_the_route_it_took():
    """The speculated attempt's watcher is dropped unfinished: one finished watch (the ledger
    row and the metrics) per call, with the decision that served it."""
    finished: list[tuple[str, str]] = []

    def watch(call: Any, send: Any) -> Watched:
        return Watched(send, lambda: finished.append((str(call.decision), call.requested)))

    async def main() -> int:
        body = body_of(b'"model": "m"', tail=b', "model": "remote"')
        statuses: list[int] = []

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        fallback = AmpFallback(
            read_then_answer, local_models=StreamingModels(), upstream=read_then_answer, watch=watch
        )
        await ProviderAlias(fallback, prefix="/provider/")(model_scope(body), Client(body), send)
        assert statuses == [200]
        return len(statuses)

    asyncio.run(main())
    assert finished == [("AMP_CREDITS", "remote")]


def test_a_speculated_calls_watch_starts_once_the_whole_body_has_arrived():
    """As for a call whose body is read first, the watch (latency, time to first byte) and the
    routing line's clock start once the body is in: the upload is not counted."""
    pieces_read_at_watch: list[int] = []
    client: Client

    def watch(call: Any, send: Any) -> Watched:
        pieces_read_at_watch.append(client.read)
        return Watched(send, lambda: None)

    async def main() -> None:
        nonlocal client
        body = body_of(b'"model": "m"')
        client = Client(body)

        async def send(message: Any) -> None:
            pass

        fallback = AmpFallback(read_then_answer, local_models=StreamingModels(), watch=watch)
        await ProviderAlias(fallback, prefix="/provider/")(model_scope(body), client, send)

    asyncio.run(main())
    assert pieces_read_at_watch == [len(client.pieces)]
