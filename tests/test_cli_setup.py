"""``ampbridge setup``: ``amp.url`` in Amp's settings file (comments, backups, symlinks and mode
kept), a wrapper for one installation with ``--cli``, and what each installed Amp CLI gets."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from ampbridge.cli import main

from .test_amp_cli import JS_VERSION, NATIVE_VERSION
from .test_cli_check import fake_home, install_two_clis

URL = "http://127.0.0.1:8317"
SETTINGS = """{
  // mine
  "amp.notifications.enabled": false,
  "amp.url": "https://ampcode.com", /* was direct */
}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return fake_home(tmp_path, monkeypatch)


@pytest.fixture
def two_clis(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    return install_two_clis(home, tmp_path, monkeypatch)


def run_setup(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["setup", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def backups(directory: Path) -> list[Path]:
    return sorted(directory.glob("settings.json.*.bak"))


def test_setup_sets_amp_url_keeps_comments_and_says_what_each_cli_gets(tmp_path, capsys, two_clis):
    settings = tmp_path / "settings.json"
    settings.write_text(SETTINGS)
    code, output = run_setup(capsys, "--settings-file", str(settings))
    assert code == 0, output
    assert settings.read_text() == SETTINGS.replace('"https://ampcode.com"', f'"{URL}"')
    (backup,) = backups(tmp_path)
    assert backup.read_text() == SETTINGS
    lines = output.splitlines()
    assert f"backed up {settings} to {backup}" in lines
    assert f"{settings}: amp.url = {URL} (was https://ampcode.com)" in lines
    assert any(line.startswith(f"  native Amp CLI {NATIVE_VERSION}") for line in lines)
    assert any(line.startswith(f"  Amp CLI, JS build (@sourcegraph/amp) {JS_VERSION}") for line in lines)
    assert "runs its agent in Amp's cloud" in output


def test_setup_again_changes_nothing_and_makes_no_second_backup(tmp_path, capsys, home):
    settings = tmp_path / "settings.json"
    settings.write_text(SETTINGS)
    assert run_setup(capsys, "--settings-file", str(settings))[0] == 0
    written = settings.read_bytes()
    code, output = run_setup(capsys, "--settings-file", str(settings))
    assert code == 0, output
    assert f"{settings}: amp.url is already {URL}" in output
    assert settings.read_bytes() == written
    assert len(backups(tmp_path)) == 1


def test_setup_writes_through_a_symlink_and_keeps_the_mode(tmp_path, capsys, home, monkeypatch):
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "settings.json"
    target.write_text(SETTINGS)
    target.chmod(0o640)
    link = home / ".config" / "amp" / "settings.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(target)
    monkeypatch.setenv("AMP_SETTINGS_FILE", str(link))
    code, output = run_setup(capsys, "--url", "http://localhost:9000")
    assert code == 0, output
    assert link.is_symlink() and link.resolve() == target
    assert '"amp.url": "http://localhost:9000"' in target.read_text()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert len(backups(dotfiles)) == 1
    assert f"{link} (-> {target}): amp.url = http://localhost:9000" in output


def test_setup_uses_the_configs_port(tmp_path, capsys, home):
    config = tmp_path / "config.yaml"
    config.write_text("port: 8400\n")
    settings = tmp_path / "settings.json"
    code, output = run_setup(capsys, "--config", str(config), "--settings-file", str(settings))
    assert code == 0, output
    assert settings.read_text() == '{\n  "amp.url": "http://127.0.0.1:8400"\n}\n'
    assert stat.S_IMODE(settings.stat().st_mode) == 0o600
    assert backups(tmp_path) == []


def test_setup_cli_wraps_one_installation_and_leaves_amp_settings_alone(tmp_path, capsys, home, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    amp = bin_dir / "amp"
    amp.write_text(
        f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "{NATIVE_VERSION}"; exit 0; fi\n'
        'echo "AMP_URL=$AMP_URL args=$*"\n'
    )
    amp.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.defpath}")
    settings = home / ".config" / "amp" / "settings.json"
    monkeypatch.setenv("AMP_SETTINGS_FILE", str(settings))
    code, output = run_setup(capsys, "--cli", "amp")
    assert code == 0, output
    wrapper = home / ".local" / "bin" / "amp-via-ampbridge"
    assert f"wrote {wrapper}: runs {amp} with AMP_URL={URL}" in output
    assert f"note: {wrapper.parent} is not on your PATH" in output
    assert f"native Amp CLI {NATIVE_VERSION} at {amp}:" in output  # what that installation gets
    assert not settings.exists()
    ran = subprocess.run([str(wrapper), "threads", "list"], capture_output=True, text=True, check=True)
    assert ran.stdout == f"AMP_URL={URL} args=threads list\n"


def test_setup_cli_refuses_a_name_that_is_not_installed(tmp_path, capsys, home):
    code, output = run_setup(capsys, "--cli", "amp")
    assert code == 1
    assert "amp: no such Amp executable" in output
    assert not (home / ".local" / "bin" / "amp-via-ampbridge").exists()


def test_setup_leaves_a_file_that_is_not_an_object_alone(tmp_path, capsys, home):
    settings = tmp_path / "settings.json"
    settings.write_text("[1, 2]\n")
    code, output = run_setup(capsys, "--settings-file", str(settings))
    assert code == 1
    assert "not a JSON object; left unchanged" in output
    assert settings.read_text() == "[1, 2]\n"
    assert backups(tmp_path) == []
