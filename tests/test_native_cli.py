"""The native Amp CLI's thread-actor traffic through ampbridge, played the way the real CLI
0.0.1790142911 does it (``fixtures/amp-traffic/native-0.0.1790142911``): ``POST /api/thread-actors``,
then a WebSocket to the actor gateway with the ``rivet_*`` subprotocols and no ``Authorization``,
the CLI's own JSON-RPC frames, literal ``ping``/``pong`` text frames, an idle stretch, and the
``/request/import`` call carrying ``x-rivet-conn-params``. The upstream is a fake actor gateway
that mints ``wsToken``s and refuses any it did not mint, as Amp's cloud does."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ampbridge.settings import Settings

from .fake_actor_gateway import CONN_PARAMS_PREFIX, FakeActorGateway, parse_conn_params
from .servers import FIXTURES, ServerThread

NATIVE = FIXTURES / "native-0.0.1790142911"
AMP_KEY = "amp-key-of-ampbridge-0001"  # configured in ampbridge
CLI_OWN_KEY = "amp-key-of-the-cli-0002"  # what `amp login` gave the CLI
CLIENT_KEY = "client-key-0003"  # an ampbridge client key (the CLI's AMP_API_KEY with api-keys)
MAPPED_KEY = "amp-key-for-that-client-0004"  # the upstream key that client key maps to
GATEWAY_PATH = "/actors/gateway/threadActor"
CLI_HEADERS = {
    "x-amp-client-application": "CLI Execute Mode",
    "x-amp-client-type": "cli",
    "x-amp-client-version": "0.0.1790142911-g7618fb",
    "user-agent": "Bun/1.4.1",
}
# Keepalive pings every half second on every hop, so the idle stretch below sees several.
PING = {"ws_ping_interval": 0.5, "ws_ping_timeout": 5}
IDLE_SECONDS = 2.0


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[FakeActorGateway]:
    server = FakeActorGateway({AMP_KEY, CLI_OWN_KEY, MAPPED_KEY})
    with ServerThread(server, **PING) as thread:
        server.url = thread.url  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def gateway(gateway_server: FakeActorGateway) -> FakeActorGateway:
    gateway_server.reset()
    gateway_server.choose = "rivet"
    return gateway_server


def large_tools_frame(size: int) -> str:
    """A JSON-RPC ``executor_tools_register`` request of ``size`` bytes: the real one (42534 bytes)
    is cut at 8 KiB in the capture."""
    frame = {"jsonrpc": "2.0", "id": "thread-client-tools", "method": "executor_tools_register"}
    frame["params"] = {"tools": [{"name": "Bash", "description": ""}]}
    padding = size - len(json.dumps(frame, separators=(",", ":")))
    frame["params"]["tools"][0]["description"] = "x" * padding
    return json.dumps(frame, separators=(",", ":"))


def complete_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def captured_cli_frames() -> list[str]:
    """The text frames the real CLI sent on its executor socket (``n`` 7 of the capture), a
    full-size stand-in for the one the capture cut short."""
    frames = []
    for line in (NATIVE / "requests_ws.jsonl").read_text(encoding="utf-8").splitlines():
        frame = json.loads(line)
        if frame["n"] == 7 and frame["dir"] == "in" and frame["opcode"] == "text":
            frames.append(frame["text"] if complete_json(frame["text"]) else large_tools_frame(frame["len"]))
    return frames


def conn_params_subprotocol(params: dict[str, Any]) -> str:
    """As the CLI writes it: ``JSON.stringify`` then ``encodeURIComponent``."""
    return CONN_PARAMS_PREFIX + quote(json.dumps(params, separators=(",", ":")), safe="!*'()")


def cli_subprotocols(params: dict[str, Any]) -> list[str]:
    return ["rivet", "rivet_encoding.bare", "rivet_skip_ready_wait", conn_params_subprotocol(params)]


def socket_params(ws_token: str | None = None, api_key: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if ws_token is not None:
        params["wsToken"] = ws_token
    if api_key is not None:
        params["apiKey"] = api_key
    application = {"type": "cli", "name": "CLI Execute Mode", "version": "0.0.1790142911-g7618fb"}
    return {**params, "clientApplication": application, "interactiveClient": False, "transport": "json-rpc"}


def actor_query(thread: str) -> str:
    return f"rvt-namespace=default&rvt-method=get&rvt-key={thread}&rvt-skip-ready-wait=true"


def ws_url(base: str, thread: str) -> str:
    return base.replace("http://", "ws://") + f"{GATEWAY_PATH}/websocket/?{actor_query(thread)}"


async def create_thread(base: str, cli_key: str | None) -> dict[str, Any]:
    headers = {**CLI_HEADERS, **({"authorization": f"Bearer {cli_key}"} if cli_key else {})}
    async with httpx.AsyncClient() as client:
        reply = await client.post(
            base + "/api/thread-actors",
            headers=headers,
            json={"executorType": "local-client", "agentMode": "medium", "features": []},
        )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def import_thread(base: str, thread: str, conn_params: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            base + f"{GATEWAY_PATH}/request/import?{actor_query(thread)}",
            headers={
                "content-type": "application/json",
                "x-rivet-conn-params": json.dumps(conn_params, separators=(",", ":")),
                "x-rivet-skip-ready-wait": "1",
                "user-agent": "Bun/1.4.1",
            },
            json={"thread": {"id": thread, "v": 0, "messages": [], "agentMode": "medium"}},
        )


async def executor_session(base: str, thread: str, params: dict[str, Any]) -> dict[str, Any]:
    """One executor socket as the CLI runs it; returns what the client saw."""
    seen: dict[str, Any] = {"replies": {}}
    subprotocols = cli_subprotocols(params)
    async with connect(
        ws_url(base, thread),
        subprotocols=subprotocols,  # type: ignore[arg-type]
        user_agent_header="undici",
        additional_headers={"accept": "*/*", "sec-fetch-mode": "websocket", "pragma": "no-cache"},
        ping_interval=PING["ws_ping_interval"],
        ping_timeout=PING["ws_ping_timeout"],
    ) as websocket:
        seen["subprotocol"] = websocket.subprotocol
        seen["offered"] = subprotocols
        seen["first"] = json.loads(await websocket.recv())
        for text in captured_cli_frames():
            await websocket.send(text)
            request = json.loads(text)
            if "id" in request:
                reply = json.loads(await websocket.recv())
                seen["replies"][request["id"]] = reply
        await websocket.send("ping")
        seen["pong"] = await websocket.recv()
        # The CLI sits idle between turns (16 s in the capture). Idling is the behaviour under
        # test, so this is a deliberate stretch of time, with keepalive pings crossing each hop.
        await anyio.sleep(IDLE_SECONDS)
        seen["open_after_idle"] = websocket.close_code is None
        await websocket.send("ping")
        seen["pong_after_idle"] = await websocket.recv()
        await websocket.close(1000, "done")
    return seen


def assert_turn_worked(seen: dict[str, Any], gateway: FakeActorGateway) -> None:
    assert seen["first"] == {"jsonrpc": "2.0", "method": "thread_features", "params": {"features": []}}
    asked = [json.loads(t)["id"] for t in captured_cli_frames() if "id" in json.loads(t)]
    assert len(asked) >= 5
    assert seen["replies"] == {i: {"jsonrpc": "2.0", "id": i, "result": {}} for i in asked}
    assert (seen["pong"], seen["open_after_idle"], seen["pong_after_idle"]) == ("pong", True, "pong")
    # The upstream got the CLI's frames byte for byte and in order; the socket stayed open.
    received = [text for _, direction, text in gateway.frames if direction == "in"]
    assert received == [*captured_cli_frames(), "ping", "ping"]
    (upgrade,) = gateway.websockets
    assert upgrade.events == ["disconnect:1000"]


def upstream_conn_params(recorded_headers: list[str]) -> list[dict[str, Any]]:
    return [p for raw in recorded_headers if (p := parse_conn_params(raw)) is not None]


def offered_upstream(gateway: FakeActorGateway) -> list[str]:
    (upgrade,) = gateway.websockets
    (header,) = upgrade.header_all("sec-websocket-protocol")
    return [p.strip() for p in header.split(",")]


@pytest.mark.parametrize("ampbridge_key", [AMP_KEY, None], ids=["ampbridge-key", "cli-own-key"])
def test_native_turn_without_client_keys(gateway, bridge, ampbridge_key):
    settings = Settings(amp_upstream_url=gateway.url, amp_upstream_api_key=ampbridge_key or "")
    ampbridge = bridge(settings, **PING)

    async def turn() -> tuple[dict[str, Any], dict[str, Any], httpx.Response]:
        thread = await create_thread(ampbridge.url, CLI_OWN_KEY)
        seen = await executor_session(ampbridge.url, thread["threadId"], socket_params(thread["wsToken"]))
        imported = await import_thread(
            ampbridge.url, thread["threadId"], {"wsToken": thread["wsToken"], "transport": "json-rpc"}
        )
        return thread, seen, imported

    thread, seen, imported = anyio.run(turn)
    assert_turn_worked(seen, gateway)
    assert seen["subprotocol"] == "rivet"
    assert imported.status_code == 200
    assert imported.json()["imported"]["thread"]["id"] == thread["threadId"]
    # The key upstream is ampbridge's, or with none the CLI's own (SPEC §17 transparent mode).
    key = ampbridge_key or CLI_OWN_KEY
    (created,) = [r for r in gateway.requests if r.path == "/api/thread-actors"]
    assert created.header("authorization") == f"Bearer {key}"
    (upgrade,) = gateway.websockets
    (call,) = [r for r in gateway.requests if r.path.startswith(GATEWAY_PATH)]
    for request in (upgrade, call):
        assert request.query.decode() == actor_query(thread["threadId"])  # loopback: no rvt-token
        assert request.header("authorization") == (f"Bearer {AMP_KEY}" if ampbridge_key else None)
    # The subprotocols reach the upstream as the CLI offered them.
    assert offered_upstream(gateway) == seen["offered"]
    assert call.header("x-rivet-conn-params") == json.dumps(
        {"wsToken": thread["wsToken"], "transport": "json-rpc"}, separators=(",", ":")
    )


def keyed_settings(gateway: FakeActorGateway, **extra: Any) -> Settings:
    return Settings(
        amp_upstream_url=gateway.url,
        api_keys=[CLIENT_KEY],
        amp_upstream_api_keys=[{"api-keys": [CLIENT_KEY], "upstream-api-key": MAPPED_KEY}],
        **extra,
    )


def test_with_client_keys_a_minted_ws_token_admits_and_no_amp_key_goes_upstream(gateway, bridge):
    ampbridge = bridge(keyed_settings(gateway, amp_upstream_api_key=AMP_KEY), **PING)

    async def turn() -> tuple[dict[str, Any], dict[str, Any], httpx.Response]:
        thread = await create_thread(ampbridge.url, CLIENT_KEY)
        seen = await executor_session(ampbridge.url, thread["threadId"], socket_params(thread["wsToken"]))
        imported = await import_thread(
            ampbridge.url, thread["threadId"], {"wsToken": thread["wsToken"], "transport": "json-rpc"}
        )
        return thread, seen, imported

    thread, seen, imported = anyio.run(turn)
    assert_turn_worked(seen, gateway)
    assert imported.status_code == 200
    (created,) = [r for r in gateway.requests if r.path == "/api/thread-actors"]
    assert created.header("authorization") == f"Bearer {MAPPED_KEY}"  # the client's mapped key
    (upgrade,) = gateway.websockets
    (call,) = [r for r in gateway.requests if r.path.startswith(GATEWAY_PATH)]
    for request in (upgrade, call):  # admitted by the token alone: the token is the credential
        assert request.header("authorization") is None
        assert request.header("x-api-key") is None
        assert not any(k in str(request.headers) for k in (AMP_KEY, MAPPED_KEY, CLIENT_KEY))


def refused_status(base: str, thread: str, params: dict[str, Any]) -> tuple[int, int]:
    """What the client sees for the upgrade and for the import call with these conn params."""

    async def attempt() -> tuple[int, int]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(base, thread), subprotocols=cli_subprotocols(params)):  # type: ignore[arg-type]
                pass
        imported = await import_thread(base, thread, params)
        return refused.value.response.status_code, imported.status_code

    return anyio.run(attempt)


@pytest.mark.parametrize("with_keys", [True, False], ids=["api-keys", "no-api-keys"])
def test_an_unknown_ws_token_is_refused_by_the_upstream_with_its_status(gateway, bridge, with_keys):
    settings = keyed_settings(gateway) if with_keys else Settings(amp_upstream_url=gateway.url)
    ampbridge = bridge(settings)
    thread = anyio.run(create_thread, ampbridge.url, CLIENT_KEY if with_keys else MAPPED_KEY)["threadId"]
    assert refused_status(ampbridge.url, thread, {"wsToken": "wst_forged", "transport": "json-rpc"}) == (
        403,
        403,
    )
    assert gateway.refusals == [(f"{GATEWAY_PATH}/websocket/", 403), (f"{GATEWAY_PATH}/request/import", 403)]
    if with_keys:  # token only: no Amp key was added to either attempt
        for request in [
            *gateway.websockets,
            *[r for r in gateway.requests if r.path.startswith(GATEWAY_PATH)],
        ]:
            assert request.header("authorization") is None and request.header("x-api-key") is None


def test_with_client_keys_no_credential_at_all_is_refused_by_ampbridge_alike(gateway, bridge):
    ampbridge = bridge(keyed_settings(gateway, amp_upstream_api_key=AMP_KEY))
    assert refused_status(ampbridge.url, "T-1", {"transport": "json-rpc"}) == (401, 401)
    assert refused_status(ampbridge.url, "T-1", socket_params(api_key="not-a-client-key")) == (401, 401)
    assert gateway.websockets == [] and gateway.requests == []


def test_client_key_as_api_key_goes_upstream_as_the_mapped_key_and_the_client_keeps_its_spelling(
    gateway, bridge
):
    gateway.choose = "conn_params"  # the upstream picks the (rewritten) conn params subprotocol
    ampbridge = bridge(keyed_settings(gateway), **PING)
    params = socket_params(api_key=CLIENT_KEY)

    async def turn() -> tuple[dict[str, Any], httpx.Response]:
        seen = await executor_session(ampbridge.url, "T-executor", params)
        imported = await import_thread(
            ampbridge.url, "T-executor", {"apiKey": CLIENT_KEY, "transport": "json-rpc"}
        )
        return seen, imported

    seen, imported = anyio.run(turn)
    assert_turn_worked(seen, gateway)
    # The websockets client accepted the handshake, and with the CLI's own spelling of the chosen
    # subprotocol (the client key inside), never the rewritten one it did not offer.
    assert seen["subprotocol"] == conn_params_subprotocol(params)
    assert imported.status_code == 200
    upstream_offer = offered_upstream(gateway)
    assert upstream_offer[:3] == seen["offered"][:3]
    assert upstream_conn_params([upstream_offer[3][len(CONN_PARAMS_PREFIX) :]]) == [
        {**params, "apiKey": MAPPED_KEY}
    ]
    # Spelled like the CLI spells it (encodeURIComponent of compact JSON).
    assert upstream_offer[3] == conn_params_subprotocol({**params, "apiKey": MAPPED_KEY})
    (call,) = [r for r in gateway.requests if r.path.startswith(GATEWAY_PATH)]
    assert upstream_conn_params(call.header_all("x-rivet-conn-params")) == [
        {"apiKey": MAPPED_KEY, "transport": "json-rpc"}
    ]
    everything_upstream = str([*gateway.websockets[0].headers, *call.headers])
    assert CLIENT_KEY not in everything_upstream


def test_first_request_on_an_unknown_path_shape_warns_once(gateway, bridge, caplog):
    ampbridge = bridge(Settings(amp_upstream_url=gateway.url))
    caplog.set_level(logging.WARNING, logger="ampbridge")
    paths = [
        "/api/brand-new-feature/T-00000000-0000-4000-8000-000000000001",
        "/api/brand-new-feature/T-00000000-0000-4000-8000-000000000002",
    ]
    first = httpx.post(ampbridge.url + paths[0], json={})
    warned = [r.getMessage() for r in caplog.records if r.name == "ampbridge.drift"]
    second = httpx.post(ampbridge.url + paths[1], json={})
    known = httpx.post(ampbridge.url + "/api/internal?getUserInfo", json={})
    assert (first.status_code, second.status_code, known.status_code) == (200, 200, 200)
    assert warned == [
        "forwarding POST /api/brand-new-feature/{id}: a control-plane path shape ampbridge does not know "
        "(a newer Amp release?)"
    ]
    assert [r.getMessage() for r in caplog.records if r.name == "ampbridge.drift"] == warned
