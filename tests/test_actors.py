"""``/actors/*``: the native CLI's conn params, admission with client keys, the routing token."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote

import pytest

from ampbridge.actors import (
    AdmittedBy,
    RoutingTokenSource,
    admit_actor_request,
    conn_params,
    decode_conn_params,
    encode_conn_params,
    is_loopback_host,
    rewrite_conn_params,
    with_routing_token,
)

CAPTURE = Path("/work/shared/fixtures/amp-traffic/native-0.0.1790142911/requests.jsonl")
CLIENT_KEYS = ("client-key-alpha", "client-key-beta")
MAPPED = {"client-key-alpha": "upstream-key-for-alpha"}


def captured(path_prefix: str) -> dict:
    for line in CAPTURE.read_text(encoding="utf-8").splitlines():
        request = json.loads(line)
        if request["path"].startswith(path_prefix):
            return request
    raise AssertionError(f"no captured request under {path_prefix}")


def captured_websocket_scope() -> dict:
    """The native CLI's upgrade as the ASGI server hands it over, minus what ampbridge added."""
    request = captured("/actors/gateway/threadActor/websocket/")
    headers = {k.lower(): v for k, v in request["headers"].items() if k.lower() not in ("authorization", "x-api-key")}
    return {
        "type": "websocket",
        "path": request["path"],
        "query_string": request["query"].encode(),
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "subprotocols": [p.strip() for p in headers["sec-websocket-protocol"].split(",")],
    }


def captured_import_scope() -> dict:
    request = captured("/actors/gateway/threadActor/request/")
    headers = {k.lower(): v for k, v in request["headers"].items() if k.lower() not in ("authorization", "x-api-key")}
    return {
        "type": "http",
        "method": "POST",
        "path": request["path"],
        "query_string": request["query"].encode(),
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }


def executor_scope(api_key: str, *, style: str) -> dict:
    """A connection carrying ``apiKey`` in its conn params, as subprotocol or header."""
    params = {"apiKey": api_key, "clientApplication": {"name": "CLI Execute Mode"}, "transport": "json-rpc"}
    if style == "subprotocol":
        encoded = "rivet_conn_params." + quote(json.dumps(params, separators=(",", ":")), safe="!*'()")
        subprotocols = ["rivet", "rivet_encoding.bare", encoded]
        return {
            "type": "websocket",
            "path": "/actors/gateway/threadActor/websocket/",
            "headers": [(b"sec-websocket-protocol", ", ".join(subprotocols).encode())],
            "subprotocols": subprotocols,
        }
    return {
        "type": "http",
        "path": "/actors/gateway/threadActor/request/import",
        "headers": [(b"x-rivet-conn-params", json.dumps(params, separators=(",", ":")).encode())],
    }


def header_value(scope: dict, name: bytes) -> str:
    return next(v.decode() for k, v in scope["headers"] if k == name)


def test_captured_websocket_upgrade_carries_a_ws_token_in_its_subprotocol():
    params = conn_params(captured_websocket_scope())
    assert params.ws_token == "fake-ws-token"
    assert params.api_key is None
    assert "fake-ws-token" not in repr(params)


def test_captured_import_call_carries_a_ws_token_in_its_header():
    assert conn_params(captured_import_scope()).ws_token == "fake-ws-token"


def test_urlencoded_conn_params_header_is_read():
    scope = {"headers": [(b"x-rivet-conn-params", b"%7B%22wsToken%22%3A%22tok-1%22%7D")]}
    assert conn_params(scope).ws_token == "tok-1"


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'{"wsToken": "   "}', b'{"wsToken": 7}'])
def test_unusable_conn_params_give_no_token(raw):
    assert conn_params({"headers": [(b"x-rivet-conn-params", raw)]}).ws_token is None


@pytest.mark.parametrize("scope_of", [captured_websocket_scope, captured_import_scope])
def test_ws_token_alone_admits_without_a_client_key(scope_of):
    admission = admit_actor_request(scope_of(), header_key=None, client_keys=CLIENT_KEYS)
    assert admission.by is AdmittedBy.WS_TOKEN
    assert admission.client_key is None


def test_client_key_in_a_header_admits_as_that_client():
    admission = admit_actor_request(captured_import_scope(), header_key="client-key-beta", client_keys=CLIENT_KEYS)
    assert (admission.by, admission.client_key) == (AdmittedBy.CLIENT_KEY, "client-key-beta")


@pytest.mark.parametrize("style", ["subprotocol", "header"])
def test_client_key_as_conn_params_api_key_admits_as_that_client(style):
    admission = admit_actor_request(executor_scope("client-key-alpha", style=style), header_key=None, client_keys=CLIENT_KEYS)
    assert (admission.by, admission.client_key) == (AdmittedBy.CLIENT_KEY, "client-key-alpha")


def test_no_credential_or_a_wrong_key_is_refused():
    bare = {"type": "http", "path": "/actors/gateway/threadActor/request/import", "headers": []}
    assert admit_actor_request(bare, header_key=None, client_keys=CLIENT_KEYS).by is AdmittedBy.REFUSED
    assert admit_actor_request(bare, header_key="wrong-key", client_keys=CLIENT_KEYS).by is AdmittedBy.REFUSED
    wrong = executor_scope("not-a-client-key", style="header")
    assert admit_actor_request(wrong, header_key=None, client_keys=CLIENT_KEYS).by is AdmittedBy.REFUSED


def test_subprotocol_api_key_is_replaced_by_the_mapped_upstream_key_keeping_the_encoding():
    scope = executor_scope("client-key-alpha", style="subprotocol")
    rewritten = rewrite_conn_params(scope, client_keys=CLIENT_KEYS, upstream_key_for=MAPPED.get)
    expected = scope["subprotocols"][2].replace("client-key-alpha", "upstream-key-for-alpha")
    assert rewritten["subprotocols"] == ["rivet", "rivet_encoding.bare", expected]
    assert header_value(rewritten, b"sec-websocket-protocol") == ", ".join(rewritten["subprotocols"])
    assert "client-key-alpha" not in repr(rewritten)


def test_header_api_key_is_replaced_keeping_plain_json():
    scope = executor_scope("client-key-alpha", style="header")
    rewritten = rewrite_conn_params(scope, client_keys=CLIENT_KEYS, upstream_key_for=MAPPED.get)
    assert header_value(rewritten, b"x-rivet-conn-params") == header_value(scope, b"x-rivet-conn-params").replace(
        "client-key-alpha", "upstream-key-for-alpha"
    )


def test_api_key_is_removed_when_the_client_has_no_upstream_key():
    scope = executor_scope("client-key-beta", style="header")
    rewritten = rewrite_conn_params(scope, client_keys=CLIENT_KEYS, upstream_key_for=MAPPED.get)
    assert json.loads(header_value(rewritten, b"x-rivet-conn-params")) == {
        "clientApplication": {"name": "CLI Execute Mode"},
        "transport": "json-rpc",
    }


def test_captured_conn_params_without_a_client_key_stay_byte_for_byte():
    for scope in (captured_websocket_scope(), captured_import_scope()):
        rewritten = rewrite_conn_params(scope, client_keys=CLIENT_KEYS, upstream_key_for=MAPPED.get)
        assert rewritten["headers"] == scope["headers"]
        assert rewritten.get("subprotocols") == scope.get("subprotocols")


def test_reencoded_captured_subprotocol_matches_what_the_cli_wrote():
    """Rewriting uses the CLI's own spelling (JSON.stringify + encodeURIComponent): decoding and
    re-encoding a captured value reproduces it exactly."""
    protocol = next(p for p in captured_websocket_scope()["subprotocols"] if p.startswith("rivet_conn_params."))
    raw = protocol[len("rivet_conn_params.") :]
    decoded = decode_conn_params(raw)
    assert decoded is not None
    assert encode_conn_params(*decoded) == raw


ACTOR_PATH = "/actors/gateway/threadActor/websocket/"
CAPTURED_QUERY = b"rvt-namespace=default&rvt-method=get&rvt-key=T-00000000-0000-4000-8000-000000000001&rvt-skip-ready-wait=true"


def test_routing_token_is_added_toward_a_remote_upstream_keeping_the_query():
    query = with_routing_token(ACTOR_PATH, CAPTURED_QUERY, upstream_host="ampcode.com", token="pk_fake+token")
    assert query == CAPTURED_QUERY + b"&rvt-token=pk_fake%2Btoken"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "::1", "127.8.9.10", "amp.localhost"])
def test_routing_token_is_not_added_toward_loopback(host):
    assert with_routing_token(ACTOR_PATH, CAPTURED_QUERY, upstream_host=host, token="pk_fake") == CAPTURED_QUERY


def test_routing_token_is_not_added_when_present_or_off_the_actor_paths():
    present = CAPTURED_QUERY + b"&rvt-token=from-the-cli"
    assert with_routing_token(ACTOR_PATH, present, upstream_host="ampcode.com", token="pk_fake") == present
    assert with_routing_token("/api/internal", b"getUserInfo", upstream_host="ampcode.com", token="pk_fake") == b"getUserInfo"
    assert with_routing_token(ACTOR_PATH, b"", upstream_host="ampcode.com", token="pk_fake") == b"rvt-token=pk_fake"
    assert with_routing_token(ACTOR_PATH, b"a=1", upstream_host="ampcode.com", token=None) == b"a=1"


def test_loopback_host_rule():
    assert is_loopback_host("[::ffff:127.0.0.1]")
    assert not is_loopback_host("10.0.0.1")
    assert not is_loopback_host("localhost.evil.example")


def test_routing_token_source_prefers_the_setting_and_looks_up_once(caplog):
    looked = []

    def discover():
        looked.append(1)
        return None

    assert RoutingTokenSource(configured=" pk_setting ", discover=discover).token() == "pk_setting"
    assert looked == []
    source = RoutingTokenSource(discover=discover)
    with caplog.at_level(logging.WARNING, logger="ampbridge.actors"):
        assert source.token() is None
        assert source.token() is None
    assert looked == [1]
    assert caplog.text.count("amp-actor-routing-token") == 1


def test_routing_token_source_never_shows_the_token(caplog):
    source = RoutingTokenSource(discover=lambda: "pk_discovered_secret")
    with caplog.at_level(logging.DEBUG):
        assert source.token() == "pk_discovered_secret"
    assert "pk_discovered_secret" not in repr(source) + caplog.text
