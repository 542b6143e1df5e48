"""ChatGPTBackend through real HTTP against the loopback fakes: refresh single-flight, rotation,
rejected refreshes, usage-limit cooldowns, account rotation, non-streaming callers, imported
Codex CLI logins, and no token anywhere a user or a log can see it."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ampbridge.chatgpt import ChatGPTBackend
from ampbridge.chatgpt.commands import account_line
from ampbridge.chatgpt.credentials import Tokens
from ampbridge.chatgpt.store import CredentialStore

from .fake_openai import Fakes, WithClient, openai_fakes
from .servers import ServerThread

DAY = 24 * 3600.0
CALL = {"model": "gpt-5.4", "input": "hi", "stream": True, "max_output_tokens": 100}


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with openai_fakes() as running:
        running.auth.add_account("acct-a", "a@example.com", "plus")
        running.auth.add_account("acct-b", "b@example.com", "pro")
        yield running


def tokens_of(reply: dict[str, Any]) -> Tokens:
    return Tokens(reply["id_token"], reply["access_token"], reply["refresh_token"])


def log_in(fakes: Fakes, store_dir: Path, account: str, **issue: Any) -> dict[str, Any]:
    reply = fakes.auth.issue(account, **issue)
    CredentialStore(store_dir).save_login(tokens_of(reply))
    return reply


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def serve(fakes: Fakes, tmp_path: Path) -> Iterator[Callable[..., ServerThread]]:
    threads: list[ServerThread] = []

    def start(**options: Any) -> ServerThread:
        app = WithClient(
            lambda client: ChatGPTBackend(
                tmp_path / "chatgpt",
                client=client,
                base_url=fakes.codex_url,
                auth_url=fakes.auth_url,
                **options,
            )
        )
        thread = ServerThread(app).__enter__()
        threads.append(thread)
        return thread

    yield start
    for thread in threads:
        thread.__exit__(None)


def call(thread: ServerThread, body: dict[str, Any] = CALL) -> httpx.Response:
    return httpx.post(f"{thread.url}/v1/responses", json=body, timeout=30)


def event_types(text: str) -> list[str]:
    return [json.loads(line[6:])["type"] for line in text.splitlines() if line.startswith("data: ")]


def test_twenty_concurrent_calls_near_expiry_make_exactly_one_refresh(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    first = log_in(fakes, tmp_path / "chatgpt", "acct-a", issued_ago=6 * DAY)  # expires in 4 days
    thread = serve()

    async def twenty() -> list[httpx.Response]:
        replies: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=30) as client, anyio.create_task_group() as group:
            for _ in range(20):

                async def one() -> None:
                    replies.append(await client.post(f"{thread.url}/v1/responses", json=CALL))

                group.start_soon(one)
        return replies

    replies = anyio.run(twenty)
    assert [r.status_code for r in replies] == [200] * 20
    assert all(event_types(r.text)[-1] == "response.completed" for r in replies)
    assert len(fakes.auth.refresh_calls) == 1
    assert fakes.auth.refresh_calls[0]["refresh_token"] == first["refresh_token"]
    stored = json.loads((tmp_path / "chatgpt" / "a@example.com.json").read_text())
    assert stored["refresh_token"] != first["refresh_token"]
    assert stored["refresh_token"] in fakes.auth.refresh_tokens  # the rotated one is live


def test_each_refresh_sends_the_refresh_token_the_last_one_returned(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    first = log_in(fakes, tmp_path / "chatgpt", "acct-a", issued_ago=6 * DAY)
    clock = Clock()
    thread = serve(clock=clock)
    assert call(thread).status_code == 200
    rotated = json.loads((tmp_path / "chatgpt" / "a@example.com.json").read_text())["refresh_token"]
    clock.offset = 6 * DAY  # the refreshed token is now close to expiry too
    assert call(thread).status_code == 200
    sent = [c["refresh_token"] for c in fakes.auth.refresh_calls]
    assert sent == [first["refresh_token"], rotated]
    assert first["refresh_token"] in fakes.auth.used_refresh_tokens


def test_rejected_refresh_marks_the_account_for_login_and_the_next_account_serves(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_dir = tmp_path / "chatgpt"
    dead = log_in(fakes, store_dir, "acct-a", issued_ago=6 * DAY)
    fakes.auth.revoked_refresh_tokens.add(dead["refresh_token"])
    log_in(fakes, store_dir, "acct-b")
    thread = serve()
    with caplog.at_level(logging.INFO, logger="ampbridge"):
        replies = [call(thread) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert fakes.codex.served == ["acct-b"] * 3
    assert len(fakes.auth.refresh_calls) == 1  # the dead login is not tried again
    store = CredentialStore(store_dir)
    record = store.find("a@example.com")
    assert record is not None and record.needs_login is not None
    assert "refresh_token_invalidated" in record.needs_login
    assert "ampbridge login chatgpt" in record.needs_login
    assert "NEEDS LOGIN" in account_line(store, record, now=time.time())
    assert "ampbridge login chatgpt" in caplog.text


def test_only_dead_logins_answer_503_with_the_login_hint(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    dead = log_in(fakes, tmp_path / "chatgpt", "acct-a", issued_ago=6 * DAY)
    fakes.auth.revoked_refresh_tokens.add(dead["refresh_token"])
    thread = serve()
    first, second = call(thread), call(thread)
    assert first.status_code == 503
    assert "ampbridge login chatgpt" in first.json()["error"]["message"]
    assert second.status_code == 503
    assert "ampbridge login chatgpt" in second.json()["error"]["message"]


@pytest.mark.parametrize("in_stream", [False, True], ids=["http-429", "error-event-in-200-stream"])
def test_usage_limit_cools_the_account_down_and_the_call_goes_to_the_next(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path, in_stream: bool
) -> None:
    store_dir = tmp_path / "chatgpt"
    log_in(fakes, store_dir, "acct-a")
    log_in(fakes, store_dir, "acct-b")
    fakes.codex.limit("acct-a", 7200, in_stream=in_stream)
    thread = serve()
    first = call(thread)
    assert first.status_code == 200
    assert "error" not in event_types(first.text)
    assert "OK from acct-b" in first.text
    second = call(thread)
    assert second.status_code == 200 and "OK from acct-b" in second.text
    tried = [r.header("chatgpt-account-id") for r in fakes.codex_server.requests]
    assert tried == ["acct-a", "acct-b", "acct-b"]  # a cooling account is not tried again
    record = CredentialStore(store_dir).find("acct-a")
    assert record is not None and record.cooldown_until is not None
    assert abs(record.cooldown_until - (time.time() + 7200)) < 60


def test_when_every_account_is_limited_the_answer_is_429_with_retry_after(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    log_in(fakes, tmp_path / "chatgpt", "acct-a")
    fakes.codex.limit("acct-a", 3600)
    thread = serve()
    backend = thread.app.app  # type: ignore[attr-defined]
    assert backend.serves("gpt-5.4")
    reply = call(thread)
    assert reply.status_code == 429
    assert 3500 <= int(reply.headers["retry-after"]) <= 3600
    assert reply.json()["error"]["message"] == "The usage limit has been reached"
    assert not backend.serves("gpt-5.4")  # so a fallback can send it elsewhere
    again = call(thread)
    assert again.status_code == 429 and len(fakes.codex_server.requests) == 1


def test_accounts_are_used_in_turn(fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path) -> None:
    log_in(fakes, tmp_path / "chatgpt", "acct-a")
    log_in(fakes, tmp_path / "chatgpt", "acct-b")
    thread = serve()
    for _ in range(4):
        assert call(thread).status_code == 200
    assert fakes.codex.served == ["acct-a", "acct-b", "acct-a", "acct-b"]


def test_accounts_option_limits_the_pool(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    log_in(fakes, tmp_path / "chatgpt", "acct-a")
    log_in(fakes, tmp_path / "chatgpt", "acct-b")
    thread = serve(accounts=["b@example.com"])
    for _ in range(3):
        assert call(thread).status_code == 200
    assert fakes.codex.served == ["acct-b"] * 3


def test_a_non_streaming_call_gets_one_responses_object(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    log_in(fakes, tmp_path / "chatgpt", "acct-a")
    thread = serve()
    reply = call(thread, {"model": "gpt-5.4(high)", "input": "hi", "temperature": 0.2})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["object"] == "response" and body["status"] == "completed"
    # The backend's completed event had an empty output: it is filled from the items.
    assert body["output"][0]["content"][0]["text"] == "OK from acct-a"
    sent = fakes.codex_server.requests[0].json()
    assert sent["model"] == "gpt-5.4" and sent["reasoning"]["effort"] == "high" and sent["stream"] is True


def test_backend_validation_errors_reach_the_client_in_openai_shape(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    log_in(fakes, tmp_path / "chatgpt", "acct-a", lifetime=DAY)  # plan plus
    fakes.auth.accounts["acct-a"].plan = "free"  # the backend now refuses gpt-5.4 for it
    thread = serve()
    reply = call(thread)
    assert reply.status_code == 400
    assert "not supported when using Codex" in reply.json()["error"]["message"]


def test_a_refused_access_token_is_refreshed_once_and_the_call_retried(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    first = log_in(fakes, tmp_path / "chatgpt", "acct-a")
    del fakes.auth.access_tokens[first["access_token"]]  # revoked at the server
    thread = serve()
    reply = call(thread)
    assert reply.status_code == 200
    assert [
        r.header("authorization") != f"Bearer {first['access_token']}" for r in fakes.codex_server.requests
    ] == [
        False,
        True,
    ]
    assert len(fakes.auth.refresh_calls) == 1


def test_unserved_model_is_a_404_and_serves_follows_the_plan(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    fakes.auth.accounts["acct-a"].plan = "free"
    log_in(fakes, tmp_path / "chatgpt", "acct-a")
    thread = serve()
    backend = thread.app.app  # type: ignore[attr-defined]
    assert backend.serves("gpt-5.5") and backend.serves("gpt-5.5(xhigh)")
    assert not backend.serves("gpt-5.4") and not backend.serves("claude-opus-4-7")
    reply = call(thread)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "model_not_found"
    assert fakes.codex_server.requests == []


def write_codex_file(path: Path, reply: dict[str, Any]) -> dict[str, Any]:
    content = {
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": reply["id_token"],
            "access_token": reply["access_token"],
            "refresh_token": reply["refresh_token"],
            "account_id": "acct-a",
        },
        "last_refresh": "2026-01-01T00:00:00Z",
        "auth_mode": "chatgpt",
        "some_future_field": {"kept": True},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    path.chmod(0o600)
    return content


def test_an_imported_login_is_refreshed_into_the_codex_cli_file_in_its_format(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    codex_file = tmp_path / "codex-home" / "auth.json"
    first = fakes.auth.issue("acct-a", issued_ago=6 * DAY)
    before = write_codex_file(codex_file, first)
    record = CredentialStore(tmp_path / "chatgpt").save_import(codex_file)
    assert first["refresh_token"] not in record.path.read_text()  # only a pointer
    thread = serve()
    assert call(thread).status_code == 200
    after = json.loads(codex_file.read_text())
    assert set(after) == set(before) and after["some_future_field"] == {"kept": True}
    assert after["OPENAI_API_KEY"] is None and after["auth_mode"] == "chatgpt"
    assert set(after["tokens"]) == {"id_token", "access_token", "refresh_token", "account_id"}
    assert after["tokens"]["refresh_token"] != first["refresh_token"]
    assert after["tokens"]["account_id"] == "acct-a"
    assert after["last_refresh"] != before["last_refresh"] and after["last_refresh"].endswith("Z")
    assert stat.S_IMODE(codex_file.stat().st_mode) == 0o600
    pointer = record.path.read_text()
    assert after["tokens"]["refresh_token"] not in pointer and after["tokens"]["access_token"] not in pointer
    # The Codex CLI's next refresh, with what is now in its file, still works.
    reply = httpx.post(
        f"{fakes.auth_url}/oauth/token",
        json={
            "client_id": "app_EMoamEEZ73f0CkXaXp7hrann",
            "grant_type": "refresh_token",
            "refresh_token": after["tokens"]["refresh_token"],
            "scope": "openid profile email",
        },
    )
    assert reply.status_code == 200


def test_a_codex_cli_refresh_made_meanwhile_is_adopted_not_repeated(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path
) -> None:
    codex_file = tmp_path / "codex-home" / "auth.json"
    write_codex_file(codex_file, fakes.auth.issue("acct-a"))
    CredentialStore(tmp_path / "chatgpt").save_import(codex_file)
    thread = serve()
    assert call(thread).status_code == 200
    newer = fakes.auth.issue("acct-a")  # the Codex CLI refreshed and rewrote its file
    write_codex_file(codex_file, newer)
    assert call(thread).status_code == 200
    assert fakes.codex_server.requests[-1].header("authorization") == f"Bearer {newer['access_token']}"
    assert fakes.auth.refresh_calls == []


def test_token_files_are_private_and_no_token_is_shown_anywhere(
    fakes: Fakes, serve: Callable[..., ServerThread], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store_dir = tmp_path / "chatgpt"
    dead = log_in(fakes, store_dir, "acct-a", issued_ago=6 * DAY)
    fakes.auth.revoked_refresh_tokens.add(dead["refresh_token"])
    log_in(fakes, store_dir, "acct-b", issued_ago=6 * DAY)
    fakes.codex.limit("acct-b", 60)
    thread = serve()
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        reply = call(thread)
        seen += [reply.text, str(reply.headers)]
        seen.append(repr(thread.app.app) + repr(thread.app.app.pool.accounts()))  # type: ignore[attr-defined]
    store = CredentialStore(store_dir)
    seen += [account_line(store, record, now=time.time()) for record in store.records()]
    seen += [repr(store.load_tokens(record)) for record in store.records()]
    seen.append(caplog.text)
    assert reply.status_code == 429
    assert fakes.auth.issued_secrets
    for secret in fakes.auth.issued_secrets:
        for text in seen:
            assert secret not in text
    files = list(store_dir.iterdir())
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    assert not [p for p in files if p.name.endswith(".tmp")]
    assert os.listdir(store_dir)
