"""The ``ampbridge`` command, run as a user would: a real process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from .test_settings import CLIPROXYAPI_CONFIG


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ampbridge(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ampbridge.cli", *args], capture_output=True, text=True, timeout=60, **kwargs
    )


class Served:
    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Output goes to a file, not a pipe: a pipe nobody reads fills up and blocks the server.
        self.output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ampbridge.cli", "serve", "--port", str(self.port), *args],
            cwd=cwd,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.stop()
                raise AssertionError(f"ampbridge serve did not come up:\n{output}")
            time.sleep(0.05)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.output.closed:
            return ""
        self.output.seek(0)
        output = self.output.read()
        self.output.close()
        return output


def test_cliproxyapi_config_starts_the_server_unchanged(tmp_path, upstream):
    config = tmp_path / "config.yaml"
    config.write_text(CLIPROXYAPI_CONFIG.replace("http://127.0.0.1:9", upstream.url))
    served = Served("--config", str(config), cwd=tmp_path)
    try:
        unauthorized = httpx.post(f"{served.url}/api/internal?getUserInfo", content=b"{}")
        authorized = httpx.post(
            f"{served.url}/api/internal?getUserInfo",
            content=b"{}",
            headers={"Authorization": "Bearer client-key-1"},
        )
    finally:
        output = served.stop()
    assert unauthorized.status_code == 401
    assert authorized.status_code == 200
    assert authorized.json()["ok"] is True
    (received,) = upstream.requests
    assert received.header("authorization") == "Bearer amp-key-from-ampcode-block"
    assert f"listening on http://127.0.0.1:{served.port}" in output
    assert f"Amp upstream: {upstream.url}" in output
    assert "auth-dir" in output  # the unknown keys were named in a warning


def test_serve_refuses_a_conflicting_config_naming_both_keys(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("amp-upstream-url: http://127.0.0.1:1\nampcode:\n  upstream-url: http://127.0.0.1:2\n")
    result = ampbridge("serve", "--config", str(config), "--port", str(free_port()))
    assert result.returncode == 2
    assert "ampcode.upstream-url" in result.stderr and "amp-upstream-url" in result.stderr


def test_check_shows_what_is_served_where(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("""\
amp-upstream-url: http://127.0.0.1:9
providers:
  - name: claude
    type: anthropic
    base-url: "http://127.0.0.1:9"
    api-key: sk-secret
    models: ["claude-sonnet-4-5*"]
amp-model-mappings:
  - {from: claude-opus-4-7, to: claude-sonnet-4-5}
  - {from: gpt-5, to: gpt-5-mini}
""")
    result = ampbridge("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "claude [anthropic] http://127.0.0.1:9: claude-sonnet-4-5*" in result.stdout
    assert "'claude-opus-4-7' -> 'claude-sonnet-4-5'" in result.stdout
    assert "'gpt-5' -> 'gpt-5-mini'  (target not served locally: skipped)" in result.stdout
    assert "forwarded to http://127.0.0.1:9" in result.stdout
    assert "sk-secret" not in result.stdout + result.stderr


def test_setup_writes_amp_url_and_keeps_other_settings(tmp_path):
    settings_file = tmp_path / "amp" / "settings.json"
    settings_file.parent.mkdir()
    original = {
        "amp.url": "https://ampcode.com",
        "amp.notifications.enabled": False,
        "amp.mcpServers": {"x": {"command": "y"}},
    }
    settings_file.write_text(json.dumps(original))
    result = ampbridge(
        "setup", "--url", "http://localhost:8317", env={**os.environ, "AMP_SETTINGS_FILE": str(settings_file)}
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(settings_file.read_text()) == {**original, "amp.url": "http://localhost:8317"}
    (backup,) = list(settings_file.parent.glob("settings.json.*.bak"))
    assert json.loads(backup.read_text()) == original


def test_setup_leaves_an_unreadable_settings_file_alone(tmp_path):
    settings_file = tmp_path / "settings.json"
    settings_file.write_text("{ // a comment amp may not like\n")
    result = ampbridge("setup", "--settings-file", str(settings_file))
    assert result.returncode == 1
    assert settings_file.read_text() == "{ // a comment amp may not like\n"


@pytest.mark.parametrize("command", ["serve", "check", "setup"])
def test_help_works(command):
    assert ampbridge(command, "--help").returncode == 0
