"""Amp's secrets file: which entries are keys for the upstream, and a fresh login used at once."""

from __future__ import annotations

import json
import logging
import os

import pytest

from ampbridge.secrets import AmpSecretsFile, UpstreamKeyResolver, local_urls, secrets_entry_name

UPSTREAM = "https://ampcode.com"
LOCAL = local_urls(8317, ["amp.example.test", "*.tunnel.test"])


class FrozenClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_as_amp_login(path, amp_url, key, others=None):
    """What ``amp login`` does: the key under ``apiKey@<AMP_URL as given>``, other entries kept."""
    data = dict(others or {})
    data[f"apiKey@{amp_url}"] = key
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


def test_local_urls_cover_loopback_names_and_exact_allowed_hosts():
    assert LOCAL == [
        "http://localhost:8317",
        "http://127.0.0.1:8317",
        "http://[::1]:8317",
        "http://amp.example.test:8317",
        "http://amp.example.test",
        "https://amp.example.test",
    ]


def test_login_through_ampbridge_is_used_by_the_next_lookup_then_a_new_login_at_once(tmp_path):
    path = tmp_path / "secrets.json"
    clock = FrozenClock()
    secrets = AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL, clock=clock)
    assert secrets.key() is None  # e.g. the native CLI's GET /api/auth/oauth-config before login
    write_as_amp_login(path, "http://localhost:8317", "fresh-login-key-1")
    assert secrets.key() == "fresh-login-key-1"
    write_as_amp_login(path, "http://localhost:8317", "fresh-login-key-2")
    assert secrets.key() == "fresh-login-key-2"


@pytest.mark.parametrize(
    "amp_url",
    [
        "http://localhost:8317",
        "http://localhost:8317/",
        "http://127.0.0.1:8317",
        "http://[::1]:8317/",
        "http://LOCALHOST:8317",
        "https://amp.example.test",
    ],
)
def test_entries_under_ampbridge_urls_count_for_the_upstream(tmp_path, amp_url):
    path = tmp_path / "secrets.json"
    write_as_amp_login(path, amp_url, "login-key")
    assert AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL).key() == "login-key"


def test_entries_under_other_urls_are_not_keys_for_the_upstream(tmp_path):
    path = tmp_path / "secrets.json"
    data = {"apiKey@http://localhost:9999": "other-port", "apiKey@https://staging.example/": "staging"}
    path.write_text(json.dumps(data))
    assert AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL).key() is None


def test_ampcode_entry_is_never_used_for_another_upstream(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({secrets_entry_name(UPSTREAM): "ampcode-key"}))
    assert AmpSecretsFile(path, "https://amp.internal.example", local_urls=LOCAL).key() is None
    assert AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL).key() == "ampcode-key"


def test_upstream_entry_comes_before_ampbridge_entries(tmp_path):
    path = tmp_path / "secrets.json"
    write_as_amp_login(path, "http://localhost:8317", "local-key", {"apiKey@https://ampcode.com/": "direct-key"})
    assert AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL).key() == "direct-key"


def test_unchanged_file_is_cached_for_five_minutes(tmp_path):
    path = tmp_path / "secrets.json"
    clock = FrozenClock()
    write_as_amp_login(path, "http://localhost:8317", "cached-key")
    secrets = AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL, clock=clock)
    reads = []
    original = secrets._read

    def counting_read():
        reads.append(1)
        return original()

    secrets._read = counting_read
    assert secrets.key() == "cached-key"
    clock.now = 299.0
    assert secrets.key() == "cached-key"
    assert len(reads) == 1
    clock.now = 300.0
    assert secrets.key() == "cached-key"
    assert len(reads) == 2


def test_change_with_same_size_and_restored_mtime_is_still_seen(tmp_path):
    path = tmp_path / "secrets.json"
    write_as_amp_login(path, "http://localhost:8317", "key-aaaa")
    secrets = AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL, clock=FrozenClock())
    assert secrets.key() == "key-aaaa"
    stat = path.stat()
    replacement = tmp_path / "new.json"
    write_as_amp_login(replacement, "http://localhost:8317", "key-bbbb")
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    replacement.replace(path)  # an atomic replace: same size, same mtime, new inode
    assert secrets.key() == "key-bbbb"


def test_removed_file_means_no_key_at_once(tmp_path):
    path = tmp_path / "secrets.json"
    write_as_amp_login(path, "http://localhost:8317", "gone-soon")
    secrets = AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL, clock=FrozenClock())
    assert secrets.key() == "gone-soon"
    path.unlink()
    assert secrets.key() is None


def test_keys_are_trimmed_and_empty_ones_ignored(tmp_path):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"apiKey@https://ampcode.com/": "   ", "apiKey@http://localhost:8317": "  padded-key\n"}))
    assert AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL).key() == "padded-key"


@pytest.mark.parametrize("bad", ["two words", "tab\tinside", "bell\x07key"])
def test_key_with_inner_whitespace_or_control_characters_is_refused_and_not_logged(tmp_path, caplog, bad):
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"apiKey@http://localhost:8317/": bad}))
    with caplog.at_level(logging.WARNING, logger="ampbridge.secrets"):
        assert AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL).key() is None
    assert "malformed key" in caplog.text
    assert bad not in caplog.text


def test_malformed_file_is_logged_not_fatal(tmp_path, caplog):
    path = tmp_path / "secrets.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="ampbridge.secrets"):
        assert AmpSecretsFile(path, UPSTREAM).key() is None
    assert "cannot use Amp secrets file" in caplog.text


def test_blank_environment_key_falls_through_to_the_secrets_file(tmp_path):
    path = tmp_path / "secrets.json"
    write_as_amp_login(path, "http://127.0.0.1:8317", "file-key")
    secrets = AmpSecretsFile(path, UPSTREAM, local_urls=LOCAL)
    resolver = UpstreamKeyResolver(environment_key="   ", secrets_file=secrets)
    assert resolver.resolve() == "file-key"
    assert resolver.source() == f"Amp secrets file {path}"
    assert UpstreamKeyResolver(environment_key=" env-key ", secrets_file=secrets).resolve() == "env-key"


def test_resolver_precedence_and_source_names_never_show_the_key(tmp_path):
    resolver = UpstreamKeyResolver(
        configured_key="configured-key", environment_key="env-key", per_client={"client-a": "mapped-key"}
    )
    assert resolver.resolve("client-a") == "mapped-key"
    assert resolver.resolve("client-b") == "configured-key"
    assert resolver.source("client-a") == "per-client mapping (amp-upstream-api-keys)"
    assert resolver.source() == "amp-upstream-api-key"
    assert UpstreamKeyResolver().source() is None
    assert "key" not in repr(resolver).replace("keys", "")
