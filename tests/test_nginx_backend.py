"""A model backend behind a real nginx (Debian's package, started here on a loopback port): its
replies reach the client through ampbridge intact, with one length or correct chunked framing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from .conftest import provider_settings
from .servers import RecordingServer, ServerThread, eventually, model_backend

NGINX = shutil.which("nginx") or next(
    (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()), None
)
pytestmark = pytest.mark.skipif(NGINX is None and not os.environ.get("CI"), reason="nginx is not installed (apt-get install nginx)")

CONFIG = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass {backend};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepting(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def nginx_fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordingServer]:
    """A fake Anthropic backend (writing as a Go server does) behind nginx; ``.url`` is nginx's."""
    backend = model_backend("anthropic-backend", ["claude-opus-4-7"])
    folder = tmp_path_factory.mktemp("nginx")
    with ServerThread(backend) as thread:
        port = free_port()
        (folder / "nginx.conf").write_text(CONFIG.format(dir=folder, port=port, backend=thread.url))
        process = subprocess.Popen(
            [
                str(NGINX),
                "-p",
                str(folder),
                "-c",
                str(folder / "nginx.conf"),
                "-e",
                str(folder / "error.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            if not eventually(lambda: accepting(port) or process.poll() is not None, timeout=10) or (
                process.poll() is not None
            ):
                pytest.fail(
                    f"nginx did not start: {process.stderr.read().decode() if process.stderr else ''}"
                )
            backend.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
            yield backend
        finally:
            process.terminate()
            process.wait(10)


def exchange(url: str, path: str, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """POST over a raw socket; the status, header lines as sent, and the body unframed (chunks
    decoded and checked)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nanthropic-version: 2023-06-01\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [(name.strip(), value.strip()) for name, value in (line.split(":", 1) for line in lines)]
    names = [name.lower() for name, _ in headers]
    assert names.count("content-length") <= 1
    assert not ("content-length" in names and "transfer-encoding" in names)
    if "transfer-encoding" in names:
        payload = unchunk(payload)
    else:
        assert len(payload) == int(dict((n.lower(), v) for n, v in headers)["content-length"])
    return int(status_line.split(" ")[1]), headers, payload


def unchunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            assert data == b"\r\n", "chunked body must end with an empty chunk and CRLF"
            return body
        body += data[:size]
        assert data[size : size + 2] == b"\r\n"
        data = data[size + 2 :]


def through_ampbridge(bridge, nginx_fronted) -> str:
    """ampbridge with every provider pointed at nginx (only the Anthropic one is called)."""
    behind_nginx = SimpleNamespace(url=nginx_fronted.url)
    settings = provider_settings(dict.fromkeys(("anthropic", "openai", "google"), behind_nginx))
    return str(bridge(settings).url)


def model_calls(backend: RecordingServer) -> int:
    return len([r for r in backend.requests if r.path == "/v1/messages"])


def call(stream: bool) -> bytes:
    return json.dumps(
        {
            "model": "claude-opus-4-7",
            "max_tokens": 5,
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        }
    ).encode()


def test_a_json_reply_from_behind_nginx_arrives_whole(bridge, nginx_fronted):
    nginx_fronted.reset()
    url = through_ampbridge(bridge, nginx_fronted)
    status, headers, body = exchange(url, "/api/provider/anthropic/v1/messages", call(stream=False))
    assert status == 200
    assert json.loads(body)["model"] == "claude-opus-4-7"
    assert [value for name, value in headers if name.lower() == "x-served-by"] == ["anthropic-backend"]
    assert model_calls(nginx_fronted) == 1


def test_an_sse_reply_from_behind_nginx_arrives_event_by_event(bridge, nginx_fronted):
    nginx_fronted.reset()
    url = through_ampbridge(bridge, nginx_fronted)
    status, headers, body = exchange(url, "/api/provider/anthropic/v1/messages", call(stream=True))
    _, _, direct = exchange(nginx_fronted.url, "/v1/messages", call(stream=True))
    assert status == 200
    assert [v for n, v in headers if n.lower() == "content-type"] == ["text/event-stream"]
    assert body == direct  # every event, byte for byte, as nginx sent it
    assert b"event: message_stop" in body
    assert model_calls(nginx_fronted) == 2


def test_a_reply_from_behind_nginx_carries_one_date_and_nginx_s_server(bridge, nginx_fronted):
    url = through_ampbridge(bridge, nginx_fronted)
    _, headers, _ = exchange(url, "/api/provider/anthropic/v1/messages", call(stream=False))
    _, direct, _ = exchange(nginx_fronted.url, "/v1/messages", call(stream=False))
    assert len([n for n, _ in headers if n.lower() == "date"]) == 1
    assert [v for n, v in headers if n.lower() == "server"] == [v for n, v in direct if n == "Server"]


def test_the_nginx_style_fake_writes_what_nginx_writes(nginx_fronted):
    """The fake backends' ``nginx`` style is checked against the real thing: the same header names,
    in the same case, and chunked framing for a stream."""
    imitation = model_backend("anthropic-backend", ["claude-opus-4-7"])
    imitation.header_style = "nginx"
    with ServerThread(imitation) as thread:
        _, fake, _ = exchange(thread.url, "/v1/messages", call(stream=True))
    _, real, _ = exchange(nginx_fronted.url, "/v1/messages", call(stream=True))
    ignored = {"Connection"}  # each answers a "Connection: close" request in its own way
    assert sorted(n for n, _ in fake if n not in ignored) == sorted(n for n, _ in real if n not in ignored)
    assert dict(fake)["Transfer-Encoding"] == dict(real)["Transfer-Encoding"] == "chunked"
