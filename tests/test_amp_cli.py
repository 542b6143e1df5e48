"""Detecting installed Amp CLIs, what each gets from ampbridge, and the routing token in them."""

from __future__ import annotations

import json
import logging
import os
import shlex
from pathlib import Path

import pytest

from ampbridge.amp_cli import (
    AmpCli,
    CliKind,
    ModelCalls,
    SearchRoots,
    custom_router_command,
    describe_clis,
    embedded_version,
    find_amp_clis,
    installed_routing_token,
    native_version,
)

FAKE_TOKEN = "pk_fakeRoutingToken0123456789"
NATIVE_VERSION = "0.0.1790142911-g7618fb"
JS_VERSION = "0.0.1777897475-gdeadbe"


def install_native(directory: Path, *, token: str | None = FAKE_TOKEN) -> Path:
    """A stand-in for the native binary: answers ``--version`` and embeds the actor endpoint."""
    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "amp"
    endpoint = f'E1="https://default:{token}@actors.ampcode.com";' if token else ""
    binary.write_text(
        f"#!/bin/sh\n# {endpoint}\n"
        f'if [ "$1" = "--version" ]; then echo "{NATIVE_VERSION}"; exit 0; fi\nexit 1\n'
    )
    binary.chmod(0o755)
    return binary


def install_js(npm_root: Path, bin_dir: Path | None = None, *, version: str = JS_VERSION) -> Path:
    """What ``npm install -g @sourcegraph/amp`` leaves: the package and a ``bin/amp`` symlink."""
    package = npm_root / "@sourcegraph" / "amp"
    (package / "dist").mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"name": "@sourcegraph/amp", "version": version}))
    main = package / "dist" / "main.js"
    main.write_text("#!/usr/bin/env node\nconsole.log('amp');\n")
    main.chmod(0o755)
    if bin_dir is not None:
        bin_dir.mkdir(parents=True, exist_ok=True)
        (bin_dir / "amp").symlink_to(main)
    return package


def roots(tmp_path: Path, *, path_dirs=(), npm_roots=()) -> SearchRoots:
    home = tmp_path / "home"
    return SearchRoots(list(path_dirs), [home / ".amp" / "bin", home / ".local" / "bin"], list(npm_roots))


def test_fake_native_and_fake_js_cli_are_both_detected_with_versions(tmp_path):
    native = install_native(tmp_path / "home" / ".amp" / "bin")
    npm_root = tmp_path / "prefix" / "lib" / "node_modules"
    package = install_js(npm_root, tmp_path / "prefix" / "bin")
    found = find_amp_clis(roots(tmp_path, path_dirs=[tmp_path / "prefix" / "bin"], npm_roots=[npm_root]))
    assert found == [
        AmpCli(CliKind.JS, package, JS_VERSION),
        AmpCli(CliKind.NATIVE, native.resolve(), NATIVE_VERSION),
    ]
    assert [cli.model_calls for cli in found] == [ModelCalls.LOCAL, ModelCalls.CLOUD]


def test_js_build_reached_from_path_and_from_npm_root_is_listed_once(tmp_path):
    npm_root = tmp_path / "prefix" / "lib" / "node_modules"
    install_js(npm_root, tmp_path / "prefix" / "bin")
    found = find_amp_clis(roots(tmp_path, path_dirs=[tmp_path / "prefix" / "bin"], npm_roots=[npm_root]))
    assert [cli.kind for cli in found] == [CliKind.JS]


def test_search_roots_from_environment_use_npm_prefix_nvm_and_path(tmp_path):
    home = tmp_path / "home"
    (home / ".nvm" / "versions" / "node" / "v22.1.0" / "lib" / "node_modules").mkdir(parents=True)
    environ = {"PATH": f"/opt/x/bin{os.pathsep}/usr/bin", "NPM_CONFIG_PREFIX": str(tmp_path / "npmprefix")}
    found = SearchRoots.from_environment(environ, home)
    assert found.path_dirs == [Path("/opt/x/bin"), Path("/usr/bin")]
    assert found.binary_dirs == [home / ".amp" / "bin", home / ".local" / "bin"]
    assert found.npm_roots[0] == tmp_path / "npmprefix" / "lib" / "node_modules"
    assert home / ".npm-global" / "lib" / "node_modules" in found.npm_roots
    assert Path("/usr/local/lib/node_modules") in found.npm_roots
    assert home / ".nvm" / "versions" / "node" / "v22.1.0" / "lib" / "node_modules" in found.npm_roots


def test_native_version_falls_back_to_the_embedded_string(tmp_path):
    binary = tmp_path / "amp"
    binary.write_bytes(b"\x7fELF\x02\x01" + b"\0" * 5000 + b"bun 1.4.1\0clientVersion\0" + NATIVE_VERSION.encode() + b"\0")
    binary.chmod(0o755)  # not runnable here: --version fails, the embedded string answers
    assert native_version(binary, timeout=1.0) == NATIVE_VERSION
    assert embedded_version(tmp_path / "missing") is None


def test_routing_token_is_found_in_the_native_binary(tmp_path):
    native = install_native(tmp_path / "bin")
    clis = [AmpCli(CliKind.NATIVE, native, NATIVE_VERSION)]
    assert installed_routing_token(clis) == FAKE_TOKEN


def test_routing_token_is_found_in_the_npm_package_and_never_logged(tmp_path, caplog):
    package = install_js(tmp_path / "node_modules")
    (package / "dist" / "chunk-9.js").write_text(f'const u=`https://x.example/gw?rvt-namespace=default&rvt-token={FAKE_TOKEN}`;')
    with caplog.at_level(logging.DEBUG):
        assert installed_routing_token([AmpCli(CliKind.JS, package, JS_VERSION)]) == FAKE_TOKEN
    assert FAKE_TOKEN not in caplog.text


def test_endpoint_on_a_lookalike_host_is_not_a_routing_token(tmp_path):
    binary = tmp_path / "amp"
    binary.write_text(f'x="https://default:{FAKE_TOKEN}@actors.ampcode.com.evil.example"')
    assert installed_routing_token([AmpCli(CliKind.NATIVE, binary, None)]) is None


def test_no_token_anywhere_gives_none(tmp_path):
    native = install_native(tmp_path / "bin", token=None)
    assert installed_routing_token([AmpCli(CliKind.NATIVE, native, NATIVE_VERSION)]) is None


@pytest.mark.parametrize(
    ("kind", "version", "calls"),
    [
        (CliKind.JS, "0.0.1777897475-gabc123", ModelCalls.LOCAL),
        (CliKind.JS, "0.0.1700000000", ModelCalls.LOCAL),
        (CliKind.JS, "0.0.1785000000", ModelCalls.UNKNOWN),
        (CliKind.JS, "0.0.1790142911", ModelCalls.CLOUD),
        (CliKind.JS, None, ModelCalls.UNKNOWN),
        (CliKind.NATIVE, None, ModelCalls.CLOUD),
    ],
)
def test_what_is_served_depends_on_kind_and_build(kind, version, calls):
    assert AmpCli(kind, Path("/x"), version).model_calls is calls


def test_check_lines_say_what_is_served_for_each_cli():
    lines = describe_clis(
        [
            AmpCli(CliKind.JS, Path("/npm/@sourcegraph/amp"), JS_VERSION),
            AmpCli(CliKind.NATIVE, Path("/home/u/.amp/bin/amp"), NATIVE_VERSION),
        ]
    )
    text = "\n".join(lines)
    assert lines[0] == f"Amp CLI, JS build (@sourcegraph/amp) {JS_VERSION} at /npm/@sourcegraph/amp:"
    assert "served locally" in lines[1]
    assert lines[2] == f"native Amp CLI {NATIVE_VERSION} at /home/u/.amp/bin/amp:"
    assert "Amp's cloud" in text and "cannot be served locally" in text
    assert describe_clis([])[0].startswith("No Amp CLI found")


def test_custom_router_command_is_shell_safe():
    command = custom_router_command(
        "https://amp-models.example.net", "chat-completions", ["qwen3-coder", "gpt-oss:120b"], "/home/u/my key.txt"
    )
    assert shlex.split(command.replace("\\\n", " ")) == [
        "amp", "config", "model-providers", "add-router", "custom-url",
        "--base-url", "https://amp-models.example.net",
        "--api-format", "chat-completions",
        "--api-key-file", "/home/u/my key.txt",
        "--model-mapping", "qwen3-coder",
        "--model-mapping", "gpt-oss:120b",
    ]  # fmt: skip


@pytest.mark.parametrize(("url", "api_format"), [("https://x.example", "gemini"), ("http://x.example", "responses")])
def test_custom_router_command_refuses_bad_arguments(url, api_format):
    with pytest.raises(ValueError):
        custom_router_command(url, api_format, ["m"], "/k")
