"""Amp's secrets file is not looked at on every request once a key is known: a known key is
served for up to ``RECHECK_SECONDS``, then the file is looked at again; while no key is known,
every lookup looks, so a first login is used by the very next request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ampbridge import secrets as secrets_module
from ampbridge.secrets import RECHECK_SECONDS, AmpSecretsFile

UPSTREAM = "https://ampcode.com"


class FrozenClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write_key(path: Path, key: str) -> None:
    path.write_text(json.dumps({f"apiKey@{UPSTREAM}/": key}), encoding="utf-8")


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every time the secrets file's signature is taken (a ``stat``)."""
    seen: list[Path] = []
    original = secrets_module._signature

    def counting(path: Path) -> secrets_module.FileSignature:
        seen.append(path)
        return original(path)

    monkeypatch.setattr(secrets_module, "_signature", counting)
    return seen


def test_a_known_key_is_served_without_a_look_until_the_recheck_time(
    tmp_path: Path, looks: list[Path]
) -> None:
    path = tmp_path / "secrets.json"
    write_key(path, "first-key")
    clock = FrozenClock()
    secrets = AmpSecretsFile(path, UPSTREAM, clock=clock)
    assert secrets.key() == "first-key"
    write_key(path, "second-key")
    for step in range(100):
        clock.now = 100.0 + step * RECHECK_SECONDS / 100
        assert secrets.key() == "first-key"
    assert len(looks) == 1
    clock.now = 100.0 + RECHECK_SECONDS
    assert secrets.key() == "second-key"
    assert len(looks) == 2


def test_without_a_key_every_lookup_looks_at_the_file(tmp_path: Path, looks: list[Path]) -> None:
    path = tmp_path / "secrets.json"
    clock = FrozenClock()
    secrets = AmpSecretsFile(path, UPSTREAM, clock=clock)
    assert [secrets.key() for _ in range(3)] == [None, None, None]
    write_key(path, "logged-in-key")
    assert secrets.key() == "logged-in-key"  # the clock never moved
    assert len(looks) == 4


def test_a_file_without_a_usable_entry_is_looked_at_on_every_lookup(
    tmp_path: Path, looks: list[Path]
) -> None:
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"apiKey@https://other.example/": "not-ours"}))
    clock = FrozenClock()
    secrets = AmpSecretsFile(path, UPSTREAM, clock=clock)
    assert secrets.key() is None
    write_key(path, "now-ours")
    assert secrets.key() == "now-ours"
    assert len(looks) == 2


def test_an_unchanged_file_is_still_reread_when_its_cache_time_ends(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    write_key(path, "cached-key")
    clock = FrozenClock()
    secrets = AmpSecretsFile(path, UPSTREAM, ttl=0.1, clock=clock)  # shorter than the recheck time
    reads: list[int] = []
    original = secrets._read

    def counting_read() -> str | None:
        reads.append(1)
        return original()

    secrets._read = counting_read  # type: ignore[method-assign]
    assert secrets.key() == "cached-key"
    clock.now += 0.1
    assert secrets.key() == "cached-key"
    assert len(reads) == 2
