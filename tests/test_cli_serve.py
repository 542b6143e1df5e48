"""``ampbridge serve``: one log format for ampbridge's and uvicorn's lines (text or JSON), the
log level, the real bind address in the banner, and the warning for an unprotected bind."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import websockets.exceptions
import websockets.sync.client

from ampbridge.commands.serve import server_options
from ampbridge.settings import Settings, startup_warnings

from .test_cli import Served, command_env


def test_json_log_format_makes_every_line_json(tmp_path, upstream):
    config = tmp_path / "config.yaml"
    config.write_text(f"amp-upstream-url: {upstream.url}\nauth-dir: ~/.cli-proxy-api\n")
    served = Served("--config", str(config), "--log-format", "json", cwd=tmp_path)
    output = served.stop()
    records = [json.loads(line) for line in output.splitlines() if line.strip()]
    banner = next(r for r in records if r["message"].startswith("ampbridge listening on"))
    assert banner["listening"] == served.url
    assert banner["amp_upstream"] == upstream.url
    assert banner["amp_url"] == served.url
    loggers = {r["logger"] for r in records}
    assert {"ampbridge", "uvicorn.error", "uvicorn.access"} <= loggers
    assert any("GET /healthz" in r["message"] for r in records if r["logger"] == "uvicorn.access")
    unknown = [r for r in records if "auth-dir" in r["message"]]
    assert len(unknown) == 1 and unknown[0]["level"] == "WARNING"


def test_text_log_format_is_shared_by_uvicorn(tmp_path):
    served = Served(cwd=tmp_path)
    output = served.stop()
    assert f"ampbridge listening on {served.url}\n" in output
    assert " INFO uvicorn.error: Uvicorn running on" in output
    assert " INFO uvicorn.access: 127.0.0.1:" in output and '"GET /healthz HTTP/1.1" 200' in output


def try_websocket(served: Served) -> None:
    """A WebSocket handshake: uvicorn logs its lines at DEBUG level (refused: no such route)."""
    with pytest.raises(websockets.exceptions.InvalidStatus):
        websockets.sync.client.connect(served.url.replace("http", "ws") + "/healthz", open_timeout=10)


def test_log_level_flag_wins_over_debug_in_the_config(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("debug: true\n")
    served = Served("--config", str(config), "--log-level", "WARNING", cwd=tmp_path)
    try_websocket(served)
    output = served.stop()
    assert f"ampbridge listening on {served.url}" in output  # the banner is not a log line
    assert " INFO " not in output and " DEBUG " not in output


def test_debug_in_the_config_sets_the_level_without_the_flag(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("debug: true\n")
    served = Served("--config", str(config), cwd=tmp_path)
    try_websocket(served)
    output = served.stop()
    assert " DEBUG uvicorn.error: < GET /healthz HTTP/1.1" in output


@pytest.mark.parametrize(
    ("host", "api_keys", "warned"),
    [
        ("127.0.0.1", [], False),
        ("::1", [], False),
        ("localhost", [], False),
        ("0.0.0.0", [], True),
        ("", [], True),
        ("192.0.2.1", [], True),
        ("", ["client-key"], False),
    ],
)
def test_a_bind_beyond_loopback_without_client_keys_is_warned_about(host, api_keys, warned):
    warnings = startup_warnings(Settings(host=host, api_keys=api_keys))
    assert bool(warnings) is warned
    if warned:
        assert "NOT PROTECTED" in warnings[0] and "api-keys" in warnings[0]


def test_server_options_carry_the_connection_limits():
    options = server_options(Settings(header_timeout=12, max_connections=34))
    limits = options["http"].limits
    assert (limits.header_timeout, limits.max_connections) == (12, 34)
    assert options["proxy_headers"] is False and options["server_header"] is False


DRIVER = """
import subprocess, sys, tempfile, time, httpx
config, port = sys.argv[1], sys.argv[2]
output = tempfile.TemporaryFile(mode="w+")
server = subprocess.Popen([sys.executable, "-m", "ampbridge.cli", "serve", "--config", config, "--port", port],
                          stdout=output, stderr=subprocess.STDOUT, text=True)
deadline = time.monotonic() + 20
while time.monotonic() < deadline and server.poll() is None:
    try:
        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
            break
    except httpx.TransportError:
        time.sleep(0.05)
server.terminate()
server.wait(15)
output.seek(0)
print(output.read())
"""


def serve_in_own_network_namespace(tmp_path, config_text: str) -> str:
    """Runs ``ampbridge serve`` in a new network namespace holding only a loopback interface, so
    binding every interface exposes nothing; returns its output."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    trial = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if trial.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {trial.stderr.decode().strip()}")
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    result = subprocess.run(
        [
            "unshare",
            "-rn",
            "sh",
            "-c",
            'ip link set lo up && exec "$@"',
            "sh",
            sys.executable,
            str(driver),
            str(config),
            "8317",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=command_env(),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_host_empty_binds_all_interfaces_says_so_and_warns_once(tmp_path):
    output = serve_in_own_network_namespace(tmp_path, 'host: ""\nauth-dir: ~/.cli-proxy-api\n')
    assert "ampbridge listening on port 8317 on all interfaces (IPv4 and IPv6)" in output
    assert "point Amp at it: amp.url = http://localhost:8317" in output
    assert output.count("NOT PROTECTED") == 1
    assert output.count("auth-dir") == 1
    assert "Uvicorn running" in output  # it did start


def test_host_empty_with_client_keys_is_not_warned_about(tmp_path):
    output = serve_in_own_network_namespace(tmp_path, 'host: "0.0.0.0"\napi-keys: [client-key-1]\n')
    assert "ampbridge listening on http://0.0.0.0:8317 (all IPv4 interfaces)" in output
    assert "NOT PROTECTED" not in output
    assert "Uvicorn running" in output
