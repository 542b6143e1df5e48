"""One log format for ampbridge's and uvicorn's lines, text or JSON, and no key in any line at
any level: a real uvicorn server at debug level takes WebSocket handshakes and HTTP requests
that carry keys, and everything it printed is searched for them."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send
from websockets.sync.client import connect

from ampbridge.logs import OWNED_LOGGERS, configure_logging, redact

from .servers import ServerThread

KEYS = {
    "authorization": "sk-bearer-secret-1111",
    "x_api_key": "sk-x-api-key-secret-2222",
    "subprotocol": "sk-subprotocol-secret-3333",
    "query": "sk-query-secret-4444",
    "goog": "sk-goog-secret-5555",
    "cookie": "session-secret-6666",
}


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Accepts WebSockets (choosing the client's subprotocol, as a relay would) and answers HTTP."""
    if scope["type"] == "websocket":
        await receive()
        protocols = scope.get("subprotocols") or []
        await send({"type": "websocket.accept", "subprotocol": protocols[0] if protocols else None})
        message = await receive()
        await send({"type": "websocket.send", "text": message.get("text") or ""})
        await send({"type": "websocket.close", "code": 1000})
    elif scope["type"] == "http":
        logging.getLogger("ampbridge.test").info(
            "served %s", scope["path"] + "?" + scope["query_string"].decode(), extra={"route_kind": "model"}
        )
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = [*OWNED_LOGGERS, "uvicorn.error", "uvicorn.access", "uvicorn.asgi"]
    saved = {name: (logging.getLogger(name), list(logging.getLogger(name).handlers)) for name in names}
    state = {name: (logger.level, logger.propagate) for name, (logger, _) in saved.items()}
    yield
    for name, (logger, handlers) in saved.items():
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            logger.addHandler(handler)
        logger.level, logger.propagate = state[name]


def exercise(url: str) -> None:
    ws_url = url.replace("http://", "ws://")
    with connect(
        f"{ws_url}/api/actors?key={KEYS['query']}",
        additional_headers={
            "Authorization": f"Bearer {KEYS['authorization']}",
            "X-Api-Key": KEYS["x_api_key"],
            "Cookie": f"session={KEYS['cookie']}",
        },
        subprotocols=[KEYS["subprotocol"]],  # type: ignore[list-item]
    ) as websocket:
        websocket.send("hello")
        assert websocket.recv() == "hello"
    answer = httpx.get(
        f"{url}/api/provider/google/v1beta/models?key={KEYS['query']}",
        headers={"X-Goog-Api-Key": KEYS["goog"], "Authorization": f"Bearer {KEYS['authorization']}"},
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("ws", ["websockets", "websockets-sansio"])
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_key_in_any_line_of_a_debug_server(
    ws: str, log_format: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    log_file = tmp_path / "logs" / "requests.log"
    configure_logging(level="debug", to_file=True, log_format=log_format, log_file=log_file)
    logging.getLogger("websockets").setLevel(logging.DEBUG)  # the client's own handshake lines too
    with ServerThread(echo_app, ws=ws, log_level="debug") as server:
        exercise(server.url)
    console = capfd.readouterr().err
    written = log_file.read_text()
    assert written and set(written.splitlines()) <= set(console.splitlines())  # same lines, same format
    for name, key in KEYS.items():
        assert key not in console, f"the {name} key was logged"
    assert "[redacted]" in console
    # uvicorn's websockets protocols and the websockets client print each handshake header
    assert re.search(r"Authorization: \[redacted\]", console, re.IGNORECASE)
    assert re.search(r"Sec-WebSocket-Protocol: \[redacted\]", console, re.IGNORECASE)
    lines = [line for line in console.splitlines() if line.strip()]
    if log_format == "json":
        entries = [json.loads(line) for line in lines]  # every line is one JSON object
        assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
        loggers = {entry["logger"] for entry in entries}
        assert {"uvicorn.error", "uvicorn.access", "ampbridge.test"} <= loggers
        served = next(entry for entry in entries if entry["logger"] == "ampbridge.test")
        assert served["route_kind"] == "model"
        assert served["message"] == "served /api/provider/google/v1beta/models?key=[redacted]"
        access = next(entry for entry in entries if entry["logger"] == "uvicorn.access")
        assert "key=[redacted]" in access["message"] and access["level"] == "INFO"
    else:
        shape = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")
        starts = [line for line in lines if shape.match(line)]
        assert any(" INFO uvicorn.access: " in line for line in starts)
        assert any(" DEBUG uvicorn.error: " in line for line in starts)
        assert any(" INFO ampbridge.test: served " in line for line in starts)


def test_info_level_hides_debug_lines(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    with ServerThread(echo_app, ws="websockets", log_level="debug") as server:
        # as the standalone app does at start-up: after uvicorn set its loggers from its own config
        configure_logging(level="info", to_file=False)
        exercise(server.url)
    console = capfd.readouterr().err
    assert " INFO uvicorn.access: " in console
    assert " DEBUG " not in console


def test_debug_from_the_config_file_wins(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(level="warning", debug=True)
    logging.getLogger("ampbridge.test").debug("visible")
    assert "DEBUG ampbridge.test: visible" in capfd.readouterr().err


def test_a_bad_format_or_level_fails_at_once(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging(log_format="xml")
    with pytest.raises(ValueError, match="log level"):
        configure_logging(level="loud")


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("< Authorization: Bearer sk-1", "< Authorization: [redacted]"),
        ("> x-api-key: sk-2", "> x-api-key: [redacted]"),
        ("< Sec-WebSocket-Protocol: sk-3, other", "< Sec-WebSocket-Protocol: [redacted]"),
        (
            "headers [(b'authorization', b'Bearer sk-4'), (b'accept', b'*/*')]",
            "headers [(b'authorization', b'[redacted]'), (b'accept', b'*/*')]",
        ),
        ("{'X-Goog-Api-Key': 'sk-5', 'Host': 'h'}", "{'X-Goog-Api-Key': '[redacted]', 'Host': 'h'}"),
        ("GET /v1/models?alt=sse&key=sk-6 HTTP/1.1", "GET /v1/models?alt=sse&key=[redacted] HTTP/1.1"),
        ("author: Ann, x-api-keyring: fine", "author: Ann, x-api-keyring: fine"),
    ],
)
def test_redact_masks_header_values_wherever_a_line_shows_them(line: str, masked: str) -> None:
    assert redact(line) == masked
