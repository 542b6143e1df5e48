"""The ``ampbridge`` command, run as a user would: a real process (on 127.0.0.1 for ``serve``)."""

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

import ampbridge

from .test_settings import CLIPROXYAPI_CONFIG

# The ampbridge under test (a worktree's copy, not whichever one the venv installed).
SOURCE_ROOT = str(Path(ampbridge.__file__).resolve().parent.parent)


def command_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SOURCE_ROOT, **(extra or {})}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ampbridge_command(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ampbridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=command_env(env),
        **kwargs,
    )


class Served:
    """``ampbridge serve`` in a process of its own, up once ``/healthz`` answers."""

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
            env=command_env(env),
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
    assert output.count("auth-dir") == 1  # the unknown keys were named in one warning, once


def test_serve_refuses_a_conflicting_config_naming_both_keys(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("amp-upstream-url: http://127.0.0.1:1\nampcode:\n  upstream-url: http://127.0.0.1:2\n")
    result = ampbridge_command("serve", "--config", str(config), "--port", str(free_port()))
    assert result.returncode == 2
    assert "ampcode.upstream-url" in result.stderr and "amp-upstream-url" in result.stderr


def test_bare_ampbridge_prints_help_on_stdout():
    result = ampbridge_command()
    assert result.returncode == 0
    assert result.stdout.startswith("usage: ampbridge")
    for command in ("serve", "check", "setup", "usage", "login", "logout", "accounts"):
        assert f"    {command} " in result.stdout
    assert result.stderr == ""


def test_version():
    result = ampbridge_command("--version")
    assert result.returncode == 0
    assert result.stdout == f"ampbridge {ampbridge.__version__}\n"


@pytest.mark.parametrize(
    "command",
    [["serve"], ["check"], ["setup"], ["usage"], ["login", "chatgpt"], ["logout", "chatgpt"], ["accounts"]],
)
def test_help_works(command):
    result = ampbridge_command(*command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: ampbridge {' '.join(command)}")


def test_check_takes_the_config_file_as_an_argument(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("amp-upstream-url: http://127.0.0.1:9\namp-upstream-api-key: amp-secret-key\n")
    result = ampbridge_command("check", str(config), env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"config: {config} - valid\n")
    assert "Amp key: from amp-upstream-api-key" in result.stdout
    assert "amp-secret-key" not in result.stdout + result.stderr


def test_setup_writes_amp_url_and_keeps_other_settings(tmp_path):
    settings_file = tmp_path / "amp" / "settings.json"
    settings_file.parent.mkdir()
    original = {
        "amp.url": "https://ampcode.com",
        "amp.notifications.enabled": False,
        "amp.mcpServers": {"x": {"command": "y"}},
    }
    settings_file.write_text(json.dumps(original))
    result = ampbridge_command(
        "setup",
        "--url",
        "http://localhost:8317",
        env={"AMP_SETTINGS_FILE": str(settings_file), "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(settings_file.read_text()) == {**original, "amp.url": "http://localhost:8317"}
    (backup,) = list(settings_file.parent.glob("settings.json.*.bak"))
    assert json.loads(backup.read_text()) == original


def test_setup_leaves_an_unreadable_settings_file_alone(tmp_path):
    settings_file = tmp_path / "settings.json"
    settings_file.write_text("{ // a comment amp may not like\n")
    result = ampbridge_command("setup", "--settings-file", str(settings_file), env={"HOME": str(tmp_path)})
    assert result.returncode == 1
    assert "left unchanged" in result.stderr
    assert settings_file.read_text() == "{ // a comment amp may not like\n"
