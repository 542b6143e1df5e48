"""ChatGPT logins against the fake OAuth server: the browser flow (an HTTP client following the
authorize redirect to the loopback callback), the state check, the device-code flow, the headless
paste flow through the CLI's stdin, the Codex CLI import, ``accounts`` and ``logout``."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from ampbridge.chatgpt.commands import register
from ampbridge.chatgpt.credentials import Tokens
from ampbridge.chatgpt.login_flows import (
    DeviceFlowUnavailable,
    login_with_browser,
    login_with_device_code,
)
from ampbridge.chatgpt.oauth import LoginError
from ampbridge.chatgpt.store import CredentialStore

from .fake_openai import Fakes, openai_fakes
from .servers import eventually


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with openai_fakes() as running:
        running.auth.add_account("acct-a", "a@example.com", "pro")
        yield running


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ampbridge")
    register(parser.add_subparsers(dest="command", required=True), data_dir_default=Path("unused"))
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


def test_browser_login_completes_when_the_browser_follows_the_redirect(fakes: Fakes) -> None:
    pages: list[httpx.Response] = []

    async def login() -> Tokens:
        async with httpx.AsyncClient(trust_env=False) as client:

            async def browser(url: str) -> None:
                assert url.startswith(f"{fakes.auth_url}/oauth/authorize?")
                pages.append(await client.get(url, follow_redirects=True))

            return await login_with_browser(client, auth_url=fakes.auth_url, open_url=browser, port=0)

    tokens = anyio.run(login)
    assert pages[0].status_code == 200 and "you can close this tab" in pages[0].text
    assert pages[0].url.path == "/auth/callback" and pages[0].url.host == "localhost"
    identity = tokens.identity
    assert (identity.account_id, identity.email, identity.plan) == ("acct-a", "a@example.com", "pro")
    exchange = fakes.auth.exchange_calls[0]
    assert (
        exchange["grant_type"] == "authorization_code"
        and exchange["redirect_uri"] == str(pages[0].url).split("?")[0]
    )


def test_browser_login_refuses_a_callback_with_another_state(fakes: Fakes) -> None:
    pages: list[httpx.Response] = []

    async def login() -> Tokens:
        async with httpx.AsyncClient(trust_env=False) as client:

            async def forged(url: str) -> None:
                redirect = httpx.URL(url).params["redirect_uri"]
                pages.append(await client.get(redirect, params={"code": "stolen", "state": "not-ours"}))

            return await login_with_browser(client, auth_url=fakes.auth_url, open_url=forged, port=0)

    with pytest.raises(LoginError, match="state does not match"):
        anyio.run(login)
    assert pages[0].status_code == 400
    assert fakes.auth.exchange_calls == []


def test_device_code_login_polls_until_the_code_is_entered(fakes: Fakes) -> None:
    fakes.auth.pending_polls = 2
    shown: list[str] = []

    async def login() -> Tokens:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await login_with_device_code(
                client, auth_url=fakes.auth_url, announce=shown.append, min_interval=0
            )

    tokens = anyio.run(login)
    assert tokens.identity.account_id == "acct-a"
    assert fakes.auth.device_polls == 3
    assert "ABCD-1234" in shown[0] and f"{fakes.auth_url}/codex/device" in shown[0]
    assert fakes.auth.exchange_calls[0]["redirect_uri"] == f"{fakes.auth_url}/deviceauth/callback"


def test_device_flow_not_offered_is_reported_as_such(fakes: Fakes) -> None:
    fakes.auth.device_flow = False

    async def login() -> Tokens:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await login_with_device_code(client, auth_url=fakes.auth_url, announce=print)

    with pytest.raises(DeviceFlowUnavailable):
        anyio.run(login)


def test_headless_login_reads_the_pasted_redirect_url_from_stdin(
    fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fakes.auth.device_flow = False  # so the CLI falls back to print-and-paste
    read_end, write_end = os.pipe()
    output = io.StringIO()
    monkeypatch.setattr(sys, "stdin", os.fdopen(read_end, "r"))
    monkeypatch.setattr(sys, "stdout", output)
    result: list[int] = []
    argv = [
        "login",
        "chatgpt",
        "--headless",
        "--auth-url",
        fakes.auth_url,
        "--data-dir",
        str(tmp_path / "store"),
    ]
    worker = threading.Thread(target=lambda: result.append(run_cli(argv)))
    worker.start()
    try:
        found = eventually(
            lambda: re.search(r"http://\S+/oauth/authorize\?\S+", output.getvalue()), timeout=10
        )
        assert found, output.getvalue()
        assert "redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback" in found.group(0)
        # The user's browser (anywhere) ends at a localhost URL that does not load; they paste it.
        location = httpx.get(found.group(0)).headers["location"]
        os.write(write_end, (location + "\n").encode())
    finally:
        os.close(write_end)
        worker.join(10)
    assert result == [0], output.getvalue()
    assert "logged in a@example.com (plan pro)" in output.getvalue()
    saved = tmp_path / "store" / "a@example.com.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["refresh_token"] in fakes.auth.refresh_tokens


def codex_login_file(fakes: Fakes, path: Path) -> dict[str, object]:
    reply = fakes.auth.issue("acct-a")
    path.parent.mkdir(parents=True)
    content: dict[str, object] = {
        "OPENAI_API_KEY": None,
        "tokens": {k: reply[k] for k in ("id_token", "access_token", "refresh_token")},
        "last_refresh": "2026-08-01T10:00:00Z",
    }
    path.write_text(json.dumps(content))
    return content


def test_import_records_a_pointer_and_accounts_shows_no_token(
    fakes: Fakes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    codex_home = tmp_path / "codex"
    original = codex_login_file(fakes, codex_home / "auth.json")
    original_text = (codex_home / "auth.json").read_text()
    monkeypatch.setenv("CODEX_HOME", str(codex_home))
    store_dir = tmp_path / "store"
    assert run_cli(["login", "chatgpt", "--import", "--data-dir", str(store_dir)]) == 0
    assert run_cli(["accounts", "--data-dir", str(store_dir)]) == 0
    out = capsys.readouterr().out
    assert "imported the Codex CLI's login as a@example.com (plan pro)" in out
    assert re.search(
        r"a@example\.com \(plan pro\)  \[imported from .*auth\.json\]  token expires .* ready", out
    )
    assert (codex_home / "auth.json").read_text() == original_text  # untouched by the import
    pointer = (store_dir / "a@example.com.json").read_text()
    assert stat.S_IMODE((store_dir / "a@example.com.json").stat().st_mode) == 0o600
    for secret in fakes.auth.issued_secrets:
        assert secret not in out and secret not in pointer
    assert original["tokens"]


def test_import_of_an_api_key_login_is_refused_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps({"OPENAI_API_KEY": "sk-secret-key-123", "tokens": None}))
    assert run_cli(["login", "chatgpt", "--import", str(path), "--data-dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "API-key login" in err and "sk-secret-key-123" not in err


def test_logout_forgets_the_account_but_leaves_the_codex_cli_file(
    fakes: Fakes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codex_file = tmp_path / "codex" / "auth.json"
    codex_login_file(fakes, codex_file)
    store = CredentialStore(tmp_path / "store")
    store.save_import(codex_file)
    fakes.auth.add_account("acct-b", "b@example.com", "plus")
    reply = fakes.auth.issue("acct-b")
    store.save_login(Tokens(reply["id_token"], reply["access_token"], reply["refresh_token"]))
    data_dir = ["--data-dir", str(store.directory)]
    assert run_cli(["logout", "chatgpt", *data_dir]) == 1
    assert "name the account to log out (accounts: a@example.com, b@example.com)" in capsys.readouterr().err
    assert run_cli(["logout", "chatgpt", "acct-a", *data_dir]) == 0
    assert "Codex CLI's own login" in capsys.readouterr().out
    assert [r.name for r in store.records()] == ["b@example.com"]
    assert json.loads(codex_file.read_text())["tokens"]["refresh_token"]  # the CLI's login stays
