"""``ampbridge check``: the Amp key source, the installed Amp CLIs, where models are served, and
``--probe`` against loopback fakes. Run in-process through ``main`` with a fake home directory."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from ampbridge.cli import main

from .conftest import ANTHROPIC_KEY, GOOGLE_KEY
from .servers import respond
from .test_amp_cli import FAKE_TOKEN, JS_VERSION, NATIVE_VERSION, install_js, install_native

AMP_KEY = "amp-key-0123456789"


def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home directory with no Amp CLI in it, and nothing on PATH but the system's tools."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", os.defpath)
    for name in list(os.environ):
        if name.lower() == "npm_config_prefix" or name == "NVM_DIR":
            monkeypatch.delenv(name)
    return home


def install_two_clis(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A native CLI in ~/.amp/bin and the JS build installed with npm under a prefix on PATH."""
    native = install_native(home / ".amp" / "bin")
    prefix = tmp_path / "npm-prefix"
    package = install_js(prefix / "lib" / "node_modules", prefix / "bin")
    monkeypatch.setenv("PATH", f"{prefix / 'bin'}{os.pathsep}{os.defpath}")
    monkeypatch.setenv("npm_config_prefix", str(prefix))
    return native, package


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fake_home(tmp_path, monkeypatch)


@pytest.fixture
def two_clis(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    return install_two_clis(home, tmp_path, monkeypatch)


def write_config(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    return config


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["check", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


PROVIDERS = """\
amp-upstream-url: http://127.0.0.1:9
api-keys: [client-key-1]
allowed-hosts: ["*.internal.example", "bridge.example.net"]
providers:
  - name: claude
    type: anthropic
    base-url: http://127.0.0.1:9
    api-key: sk-ant-secret
    models: ["claude-sonnet-4-5*", "claude-opus-4-7"]
  - name: gpt
    type: openai
    base-url: http://127.0.0.1:9/v1
    api-key: sk-openai-secret
    models: ["gpt-5.4", "qwen3-coder"]
amp-model-mappings:
  - {from: claude-opus-4-8, to: claude-sonnet-4-5}
  - {from: gpt-5, to: gpt-5-mini}
"""


def test_check_lists_both_installed_clis_with_versions_and_what_each_gets(tmp_path, capsys, two_clis):
    native, package = two_clis
    code, output = check(capsys, str(write_config(tmp_path, PROVIDERS)))
    assert code == 0, output
    lines = output.splitlines()
    js_line = lines.index(f"  Amp CLI, JS build (@sourcegraph/amp) {JS_VERSION} at {package.resolve()}:")
    assert "model calls (/api/provider/*) go through ampbridge" in lines[js_line + 1]
    native_line = lines.index(f"  native Amp CLI {NATIVE_VERSION} at {native.resolve()}:")
    assert "runs its agent in Amp's cloud" in lines[native_line + 1]
    assert "cannot be served locally" in lines[native_line + 1]
    # The routing token read from the native binary is never shown.
    assert FAKE_TOKEN not in output


def test_check_prints_the_custom_router_command_for_a_native_cli(tmp_path, capsys, two_clis):
    code, output = check(capsys, "--config", str(write_config(tmp_path, PROVIDERS)))
    assert code == 0, output
    # The tunnel host is the exact name in allowed-hosts; each format gets its own router.
    assert (
        "amp config model-providers add-router custom-url \\\n"
        "        --base-url https://bridge.example.net/v1 \\\n"
        "        --api-format chat-completions \\\n"
        "        --api-key-file ampbridge-client-key.txt \\\n"
        "        --model-mapping gpt-5.4 \\\n"
        "        --model-mapping qwen3-coder"
    ) in output
    assert "--base-url https://bridge.example.net \\\n        --api-format anthropic-messages" in output
    assert "--model-mapping claude-opus-4-7" in output
    assert "set api-keys first" not in output
    assert "sk-ant-secret" not in output and "sk-openai-secret" not in output and "client-key-1" not in output


def test_router_command_without_a_tunnel_host_or_client_keys_says_what_is_missing(tmp_path, capsys, two_clis):
    config = PROVIDERS.replace("api-keys: [client-key-1]\n", "").replace(
        'allowed-hosts: ["*.internal.example", "bridge.example.net"]\n', ""
    )
    code, output = check(capsys, str(write_config(tmp_path, config)))
    assert code == 0, output
    assert "expose http://127.0.0.1:8317 through a tunnel and add its hostname to allowed-hosts" in output
    assert "set api-keys first" in output
    assert "--base-url https://YOUR-TUNNEL-HOST/v1" in output


def test_no_router_command_when_only_the_js_cli_is_installed(tmp_path, capsys, home, monkeypatch):
    prefix = tmp_path / "npm-prefix"
    install_js(prefix / "lib" / "node_modules")
    monkeypatch.setenv("npm_config_prefix", str(prefix))
    code, output = check(capsys, str(write_config(tmp_path, PROVIDERS)))
    assert code == 0, output
    assert f"Amp CLI, JS build (@sourcegraph/amp) {JS_VERSION}" in output
    assert "add-router" not in output


def test_check_shows_where_each_model_is_served(tmp_path, capsys, home):
    code, output = check(capsys, str(write_config(tmp_path, PROVIDERS)))
    assert code == 0, output
    lines = output.splitlines()
    assert "  No Amp CLI found on PATH, in ~/.amp/bin, ~/.local/bin or the npm global folders." in lines
    assert "  claude-opus-4-7 -> claude [anthropic]" in lines
    assert "  gpt-5.4 -> gpt [openai]" in lines
    assert "  claude-sonnet-4-5* -> claude [anthropic]" in lines
    assert "  mapped name 'claude-opus-4-8' -> 'claude-sonnet-4-5': claude [anthropic]" in lines
    assert "  mapped name 'gpt-5' -> 'gpt-5-mini': target not served locally: skipped" in lines
    assert "everything else: forwarded to http://127.0.0.1:9 (model calls there use Amp credits)" in lines
    assert "amp-fallback: allowed (a model call nothing here serves goes to Amp, on Amp credits)" in lines


def test_check_shows_amp_fallback_never(tmp_path, capsys, home):
    code, output = check(capsys, str(write_config(tmp_path, PROVIDERS + "amp-fallback: never\n")))
    assert code == 0, output
    assert "amp-fallback: never (a model call nothing here serves is refused: no Amp credits used)" in output
    assert "other model calls: refused (amp-fallback: never)" in output
    assert "forwarded to" not in output


def test_check_names_config_keys_it_does_not_use(tmp_path, capsys, home):
    code, output = check(capsys, str(write_config(tmp_path, "auth-dir: ~/.cli-proxy-api\nport: 8400\n")))
    assert code == 0, output
    assert "not taken: auth-dir:" in output


def test_check_without_a_key_says_how_to_get_one(tmp_path, capsys, home):
    code, output = check(capsys, str(write_config(tmp_path, "amp-upstream-url: http://127.0.0.1:9\n")))
    assert code == 0, output
    assert "Amp key: none found. Run `amp login` with AMP_URL pointing here:" in output
    assert "    AMP_URL=http://127.0.0.1:8317 amp login" in output


@pytest.mark.parametrize("source", ["config", "environment", "secrets file"])
def test_check_names_the_amp_key_source_and_never_the_key(tmp_path, capsys, home, monkeypatch, source):
    config = "amp-upstream-url: http://127.0.0.1:9\n"
    if source == "config":
        config += f"amp-upstream-api-key: {AMP_KEY}\n"
        expected = "Amp key: from amp-upstream-api-key"
    elif source == "environment":
        monkeypatch.setenv("AMP_API_KEY", AMP_KEY)
        expected = "Amp key: from AMP_API_KEY"
    else:
        secrets = Path(os.environ["XDG_DATA_HOME"]) / "amp" / "secrets.json"
        secrets.parent.mkdir(parents=True)
        secrets.write_text(json.dumps({"apiKey@http://127.0.0.1:9/": AMP_KEY}))
        expected = f"Amp key: from Amp secrets file {secrets}"
    code, output = check(capsys, str(write_config(tmp_path, config)))
    assert code == 0, output
    assert expected in output.splitlines()
    assert "amp login" not in output
    assert AMP_KEY not in output


def test_two_different_config_files_are_refused(tmp_path, capsys, home):
    one = write_config(tmp_path, "port: 8400\n")
    code, output = check(capsys, str(one), "--config", str(tmp_path / "other.yaml"))
    assert code == 2
    assert "two config files given" in output


def test_check_reports_an_invalid_config_with_status_2(tmp_path, capsys, home):
    code, output = check(capsys, str(write_config(tmp_path, "port: [1]\n")))
    assert code == 2
    assert "port" in output


# --- --probe ---------------------------------------------------------------------------------


def probe_config(upstream_url: str, backends) -> str:
    return f"""\
amp-upstream-url: {upstream_url}
amp-upstream-api-key: {AMP_KEY}
providers:
  - name: claude
    type: anthropic
    base-url: {backends["anthropic"].url}
    api-key: {ANTHROPIC_KEY}
    models: ["claude-opus-4-7"]
  - name: gemini
    type: google
    base-url: {backends["google"].url}
    api-key: {GOOGLE_KEY}
"""


def test_probe_reports_the_upstream_and_each_backend_with_its_models(tmp_path, capsys, home, upstream, backends):
    config = write_config(tmp_path, probe_config(upstream.url, backends))
    code, output = check(capsys, str(config), "--probe")
    assert code == 0, output
    lines = output.splitlines()
    upstream_line = next(line for line in lines if line.startswith(f"  Amp upstream {upstream.url}: "))
    assert "answered HTTP 200; the Amp key is accepted" in upstream_line
    assert f"  backend claude {backends['anthropic'].url}: reachable, lists 3 models" in lines
    assert f"  backend gemini {backends['google'].url}: reachable, lists 2 models" in lines
    assert "    models: gemini-3-flash-preview, gemini-2.5-pro" in lines
    # The discovered models join the placement list; the configured list stays as configured.
    assert "  gemini lists: gemini-3-flash-preview, gemini-2.5-pro" in lines
    assert "  claude-opus-4-7 -> claude [anthropic]" in lines
    assert "  claude-haiku-4-5-20251001 -> claude [anthropic]" not in lines
    # One request upstream, carrying the Amp key that would be used; no key in the output.
    (probe,) = upstream.requests
    assert (probe.method, probe.path, probe.query) == ("POST", "/api/internal", b"getUserInfo")
    assert probe.header("authorization") == f"Bearer {AMP_KEY}"
    (listing,) = backends["google"].requests
    assert listing.header("x-goog-api-key") == GOOGLE_KEY
    for secret in (AMP_KEY, ANTHROPIC_KEY, GOOGLE_KEY):
        assert secret not in output


def test_probe_reports_a_refused_key_and_an_unreachable_backend(tmp_path, capsys, home, upstream, backends):
    async def refuse_key(scope, receive, send, rec):
        await respond(send, 401, b'{"error":"invalid api key"}')

    upstream.route(lambda method, path: path == "/api/internal", refuse_key)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    config = probe_config(upstream.url, backends).replace(backends["google"].url, dead_url)
    code, output = check(capsys, str(write_config(tmp_path, config)), "--probe")
    assert code == 1
    assert "answered HTTP 401: it refuses the Amp key" in output
    assert f"  backend gemini {dead_url}: unreachable (ConnectError)" in output.splitlines()
    assert "invalid api key" not in output
