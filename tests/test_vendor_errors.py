"""Vendor-shaped error bodies: their shapes, and what the official SDKs make of them when a real
server on 127.0.0.1 answers with them (the message reaches the user; 404 is not retried, 502 is)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import anthropic
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from starlette.types import Receive, Scope, Send

from ampbridge.models import WireFormat
from ampbridge.vendor_errors import CONTENT_TYPE, send_vendor_error, vendor_error

from .servers import ServerThread

MESSAGE = "No local backend serves model 'mystery-1' and no Amp upstream is configured."


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "model_not_found", "not_found_error"),
        (400, "invalid_request", "invalid_request_error"),
        (413, "request_too_large", "request_too_large"),
        (502, "amp_upstream_proxy_error", "api_error"),
        (504, "upstream_timeout", "timeout_error"),
        (418, "odd", "invalid_request_error"),
        (507, "odd", "api_error"),
    ],
)
def test_anthropic_shape(status, code, expected):
    body = json.loads(vendor_error(WireFormat.ANTHROPIC, status, code, MESSAGE))
    assert body == {"type": "error", "error": {"type": expected, "message": MESSAGE}}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, "invalid_request_error"),
        (400, "invalid_request_error"),
        (413, "invalid_request_error"),
        (502, "server_error"),
        (504, "server_error"),
    ],
)
def test_openai_shape_carries_our_code(status, expected):
    body = json.loads(vendor_error(WireFormat.OPENAI, status, "some_code", MESSAGE))
    assert body == {"error": {"message": MESSAGE, "type": expected, "param": None, "code": "some_code"}}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (404, "NOT_FOUND"),
        (400, "INVALID_ARGUMENT"),
        (413, "INVALID_ARGUMENT"),
        (502, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
        (507, "INTERNAL"),
    ],
)
def test_gemini_shape_has_the_numeric_status(status, expected):
    body = json.loads(vendor_error(WireFormat.GOOGLE, status, "some_code", MESSAGE))
    assert body == {"error": {"code": status, "message": MESSAGE, "status": expected}}


def test_without_a_wire_format_the_control_plane_shape_is_used():
    assert json.loads(vendor_error(None, 404, "not_found", MESSAGE)) == {
        "error": "not_found",
        "message": MESSAGE,
    }


def test_a_success_status_is_refused():
    with pytest.raises(ValueError, match="4xx or 5xx"):
        vendor_error(WireFormat.OPENAI, 200, "fine", MESSAGE)


def test_non_ascii_and_quotes_survive_as_json():
    message = 'Modell "grün" nicht gefunden\n'
    assert json.loads(vendor_error(WireFormat.ANTHROPIC, 404, "x", message))["error"]["message"] == message


# --- the SDKs against a real server ---------------------------------------------------------


@dataclass
class ErrorServer:
    """Answers every request with one vendor error and counts the requests."""

    wire_format: WireFormat
    status: int
    code: str
    requests: int = 0
    headers: list[tuple[bytes, bytes]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        sent: list[dict] = []

        async def keep(message):
            sent.append(message)
            await send(message)

        await send_vendor_error(keep, self.wire_format, self.status, self.code, MESSAGE)
        self.headers = sent[0]["headers"]


@pytest.fixture
def serve() -> Iterator:
    servers: list[ServerThread] = []

    def start(wire_format: WireFormat, status: int, code: str) -> tuple[ErrorServer, str]:
        app = ErrorServer(wire_format, status, code)
        server = ServerThread(app, lifespan="off").__enter__()
        servers.append(server)
        return app, server.url

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def anthropic_call(url: str) -> None:
    client = anthropic.Anthropic(base_url=url, api_key="client-key", max_retries=1)
    client.messages.create(model="mystery-1", max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def openai_call(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="client-key", max_retries=1)
    client.chat.completions.create(model="mystery-1", messages=[{"role": "user", "content": "hi"}])


def gemini_call(url: str) -> None:
    # The genai SDK retries only when retry options are given; these keep its default status list.
    retry = genai_types.HttpRetryOptions(attempts=2, initial_delay=0.01, max_delay=0.01)
    options = genai_types.HttpOptions(base_url=url, retry_options=retry)
    client = genai.Client(api_key="client-key", http_options=options)  # kept: it closes when dropped
    client.models.generate_content(model="mystery-1", contents="hi")


CALLS = {WireFormat.ANTHROPIC: anthropic_call, WireFormat.OPENAI: openai_call, WireFormat.GOOGLE: gemini_call}


def test_anthropic_sdk_shows_a_missing_model_and_does_not_retry(serve):
    app, url = serve(WireFormat.ANTHROPIC, 404, "model_not_found")
    with pytest.raises(anthropic.NotFoundError) as raised:
        anthropic_call(url)
    assert MESSAGE in str(raised.value)
    assert raised.value.body["error"]["type"] == "not_found_error"  # what the SDK parsed
    assert app.requests == 1


def test_openai_sdk_shows_a_missing_model_with_its_code_and_does_not_retry(serve):
    app, url = serve(WireFormat.OPENAI, 404, "model_not_found")
    with pytest.raises(openai.NotFoundError) as raised:
        openai_call(url)
    assert MESSAGE in str(raised.value)
    assert (raised.value.code, raised.value.type) == ("model_not_found", "invalid_request_error")
    assert app.requests == 1


def test_gemini_sdk_shows_a_missing_model_and_does_not_retry(serve):
    app, url = serve(WireFormat.GOOGLE, 404, "model_not_found")
    with pytest.raises(genai_errors.ClientError) as raised:
        gemini_call(url)
    assert (raised.value.code, raised.value.status, raised.value.message) == (404, "NOT_FOUND", MESSAGE)
    assert app.requests == 1


@pytest.mark.parametrize("wire_format", list(WireFormat))
def test_every_sdk_retries_an_unreachable_upstream_and_then_shows_the_message(serve, wire_format):
    app, url = serve(wire_format, 502, "amp_upstream_proxy_error")
    with pytest.raises(Exception) as raised:  # each SDK has its own server-error class
        CALLS[wire_format](url)
    assert MESSAGE in str(raised.value)
    assert app.requests == 2  # the first try and the one retry allowed


@pytest.mark.parametrize(
    ("wire_format", "error"),
    [
        (WireFormat.ANTHROPIC, anthropic.BadRequestError),
        (WireFormat.OPENAI, openai.BadRequestError),
        (WireFormat.GOOGLE, genai_errors.ClientError),
    ],
)
def test_a_bad_request_is_not_retried(serve, wire_format, error):
    app, url = serve(wire_format, 400, "invalid_request")
    with pytest.raises(error) as raised:
        CALLS[wire_format](url)
    assert MESSAGE in str(raised.value)
    assert app.requests == 1


def test_the_reply_is_json_with_one_exact_length(serve):
    app, url = serve(WireFormat.OPENAI, 404, "model_not_found")
    with pytest.raises(openai.NotFoundError) as raised:
        openai_call(url)
    response = raised.value.response
    assert response.headers["content-type"] == CONTENT_TYPE.decode()
    assert response.headers.get_list("content-length") == [str(len(response.content))]
