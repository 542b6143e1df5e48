"""Setting ``amp.url`` in Amp's settings file safely, and the per-installation wrapper script."""

from __future__ import annotations

import os
import stat
import subprocess
import time

import pytest

from ampbridge.amp_settings import (
    SettingsFileError,
    parse_jsonc,
    point_amp_at,
    resolve_cli,
    set_string_setting,
    write_cli_wrapper,
)

URL = "http://127.0.0.1:8317"
USER_SETTINGS = """{
  // my Amp settings
  "amp.notifications.enabled": false, /* keep quiet */
  "amp.mcpServers": {
    "docs": {"command": "npx", "args": ["-y", "docs-mcp", "--url=http://a/b"]},
  },
  "amp.tools.disable": ["browser", "a // not a comment"], // trailing comma next
}
"""


def fixed_time():
    return time.struct_time((2026, 9, 1, 12, 0, 0, 0, 244, 0))


def test_jsonc_with_comments_and_trailing_commas_is_read():
    data = parse_jsonc(USER_SETTINGS)
    assert data == {
        "amp.notifications.enabled": False,
        "amp.mcpServers": {"docs": {"command": "npx", "args": ["-y", "docs-mcp", "--url=http://a/b"]}},
        "amp.tools.disable": ["browser", "a // not a comment"],
    }


def test_adding_amp_url_keeps_every_other_byte_and_comment():
    updated = set_string_setting(USER_SETTINGS, "amp.url", URL)
    assert updated == USER_SETTINGS.replace(
        '"a // not a comment"], // trailing comma next\n',
        '"a // not a comment"], // trailing comma next\n  "amp.url": "http://127.0.0.1:8317"\n',
    )
    assert parse_jsonc(updated)["amp.url"] == URL


def test_replacing_amp_url_changes_only_its_value():
    text = '{\n    "amp.url": "https://ampcode.com", // was direct\n    "x": 1\n}\n'
    assert set_string_setting(text, "amp.url", URL) == text.replace("https://ampcode.com", URL)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", '{\n  "amp.url": "http://127.0.0.1:8317"\n}'),
        ('{"a": 1}', '{"a": 1,\n  "amp.url": "http://127.0.0.1:8317"}'),
        ('{\n\t"a": [1, {"b": 2}]\n}', '{\n\t"a": [1, {"b": 2}],\n\t"amp.url": "http://127.0.0.1:8317"\n}'),
        ("", '{\n  "amp.url": "http://127.0.0.1:8317"\n}\n'),
    ],
)
def test_inserting_amp_url_follows_the_file_layout(text, expected):
    updated = set_string_setting(text, "amp.url", URL)
    assert updated == expected
    assert parse_jsonc(updated)["amp.url"] == URL


@pytest.mark.parametrize("text", ["[1, 2]", '{"a": }', '{"a": 1 /* open', '"just a string"'])
def test_not_an_object_is_refused(text):
    with pytest.raises(SettingsFileError):
        set_string_setting(text, "amp.url", URL)


def test_point_amp_at_writes_keeps_mode_and_backs_up_once(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text(USER_SETTINGS)
    path.chmod(0o640)
    result = point_amp_at(URL, path, now=fixed_time)
    assert result.changed and not result.created
    assert result.backup == tmp_path / "settings.json.20260901-120000.bak"
    assert result.backup.read_text() == USER_SETTINGS
    assert parse_jsonc(path.read_text())["amp.url"] == URL
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert result.lines() == [
        f"backed up {path} to {result.backup}",
        f"{path}: amp.url = {URL}",
    ]
    again = point_amp_at(URL, path, now=fixed_time)
    assert not again.changed and again.backup is None
    assert again.lines() == [f"{path}: amp.url is already {URL}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["settings.json", "settings.json.20260901-120000.bak"]


def test_a_second_change_in_the_same_second_never_overwrites_the_first_backup(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"amp.url": "https://ampcode.com"}')
    first = point_amp_at(URL, path, now=fixed_time)
    second = point_amp_at("http://localhost:9000", path, now=fixed_time)
    assert first.backup != second.backup
    assert first.backup.read_text() == '{"amp.url": "https://ampcode.com"}'
    assert second.backup.read_text() == '{"amp.url": "http://127.0.0.1:8317"}'
    assert second.previous_url == URL
    assert second.lines()[-1] == f"{path}: amp.url = http://localhost:9000 (was {URL})"


def test_write_goes_through_a_symlink_and_keeps_the_link(tmp_path):
    dotfiles = tmp_path / "dotfiles" / "amp-settings.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text('{"x": 1}')
    link = tmp_path / "config" / "settings.json"
    link.parent.mkdir()
    link.symlink_to(dotfiles)
    result = point_amp_at(URL, link, now=fixed_time)
    assert link.is_symlink() and os.readlink(link) == str(dotfiles)
    assert parse_jsonc(dotfiles.read_text()) == {"x": 1, "amp.url": URL}
    assert result.target == dotfiles
    assert result.backup.parent == dotfiles.parent
    assert result.lines()[-1] == f"{link} (-> {dotfiles}): amp.url = {URL}"


def test_missing_file_is_created_private_without_backup(tmp_path):
    path = tmp_path / "new" / "settings.json"
    result = point_amp_at(URL, path, now=fixed_time)
    assert result.created and result.backup is None
    assert parse_jsonc(path.read_text()) == {"amp.url": URL}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert result.lines() == [f"{path}: amp.url = {URL} (new file)"]


def test_invalid_file_is_left_unchanged(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"a": 1,, }')
    with pytest.raises(SettingsFileError, match="left unchanged"):
        point_amp_at(URL, path, now=fixed_time)
    assert path.read_text() == '{"a": 1,, }'
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


def fake_amp(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('#!/bin/sh\necho "AMP_URL=$AMP_URL args=$*"\n')
    path.chmod(0o755)
    return path


def test_wrapper_runs_one_installation_with_amp_url(tmp_path):
    cli = fake_amp(tmp_path / "npm bin" / "amp")
    wrapper = tmp_path / "home" / ".local" / "bin" / "amp-via-ampbridge"
    result = write_cli_wrapper(cli, URL, wrapper)
    assert result.changed
    assert stat.S_IMODE(wrapper.stat().st_mode) == 0o755
    run = subprocess.run([str(wrapper), "-x", "hi there"], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin", "AMP_URL": "https://ampcode.com"})  # fmt: skip
    assert run.stdout == f"AMP_URL={URL} args=-x hi there\n"
    assert not write_cli_wrapper(cli, URL, wrapper).changed


def test_wrapper_never_overwrites_a_file_it_did_not_write_nor_runs_itself(tmp_path):
    cli = fake_amp(tmp_path / "bin" / "amp")
    mine = tmp_path / "bin" / "amp-via-ampbridge"
    mine.write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(SettingsFileError, match="not written by ampbridge"):
        write_cli_wrapper(cli, URL, mine)
    assert mine.read_text() == "#!/bin/sh\necho mine\n"
    with pytest.raises(SettingsFileError, match="wrapper itself"):
        write_cli_wrapper(cli, URL, cli)


def test_cli_is_found_by_name_on_the_given_path_or_by_path(tmp_path):
    cli = fake_amp(tmp_path / "bin" / "amp")
    assert resolve_cli("amp", [tmp_path / "empty", tmp_path / "bin"]) == cli
    assert resolve_cli(str(cli), []) == cli
    with pytest.raises(SettingsFileError):
        resolve_cli("amp", [tmp_path / "empty"])
