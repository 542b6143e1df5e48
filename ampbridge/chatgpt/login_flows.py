"""The three ways to log in a ChatGPT account: a browser with a loopback callback, the device-code
flow, and (headless, when the service offers no device flow for this client) printing the URL and
reading the redirected URL the user pastes back.

Each flow returns ``Tokens``; storing them is the caller's business.
"""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
from anyio.abc import SocketStream

from .credentials import Tokens
from .oauth import (
    CALLBACK_PATH,
    CLIENT_ID,
    DEFAULT_CALLBACK_PORT,
    LoginError,
    authorize_url,
    exchange_code,
    new_pkce,
    new_state,
    redirect_uri,
)

LOGIN_TIMEOUT = 600.0
DEVICE_LOGIN_TIMEOUT = 900.0  # the device flow gives up after 15 minutes
DEVICE_REDIRECT_PATH = "/deviceauth/callback"
MAX_REQUEST_HEAD = 16384

Announce = Callable[[str], None]


def code_from_callback(url: str, expected_state: str) -> str:
    """The authorization code in a callback URL (or its query string), after the state check."""
    text = url.strip()
    query = urlsplit(text).query if "://" in text or text.startswith("/") else text.lstrip("?")
    params = parse_qs(query)

    def first(key: str) -> str | None:
        values = params.get(key)
        return values[0] if values else None

    if first("error"):
        detail = first("error_description") or first("error")
        raise LoginError(f"the login was not completed: {detail}")
    if first("state") != expected_state:
        raise LoginError("the callback's state does not match this login (a stale or forged callback)")
    code = first("code")
    if not code:
        raise LoginError("the callback carries no authorization code")
    return code


def _page(status: str, title: str, text: str) -> bytes:
    body = f"<!doctype html><title>{html.escape(title)}</title><p>{html.escape(text)}</p>".encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _read_request_target(stream: SocketStream) -> str | None:
    head = b""
    while b"\r\n" not in head:
        try:
            head += await stream.receive(4096)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return None
        if len(head) > MAX_REQUEST_HEAD:
            return None
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return None
    return parts[1].decode("latin-1")


async def login_with_browser(
    client: httpx.AsyncClient,
    *,
    auth_url: str,
    open_url: Callable[[str], Awaitable[None]],
    port: int = DEFAULT_CALLBACK_PORT,
    wait_seconds: float = LOGIN_TIMEOUT,
) -> Tokens:
    """Listen on 127.0.0.1:``port`` for the OAuth callback, hand the authorize URL to ``open_url``
    (which shows it and opens a browser), and trade the returned code for tokens.

    ``port=0`` picks a free port (tests); the real client is registered for 1455 only."""
    pkce, state = new_pkce(), new_state()
    try:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    except OSError as error:
        raise LoginError(
            f"cannot listen on 127.0.0.1:{port} for the login callback ({error.strerror}); "
            "is another login running? Use --headless instead"
        ) from None
    actual_port = listener.extra(anyio.abc.SocketAttribute.local_port)
    redirect = redirect_uri(actual_port)
    outcome: dict[str, Any] = {}
    done = anyio.Event()

    async def handle(stream: SocketStream) -> None:
        async with stream:
            target = await _read_request_target(stream)
            if target is None or urlsplit(target).path != CALLBACK_PATH or done.is_set():
                await stream.send(_page("404 Not Found", "Not found", "Nothing here."))
                return
            try:
                outcome["code"] = code_from_callback(target, state)
                await stream.send(_page("200 OK", "Logged in", "ChatGPT login done: you can close this tab."))
            except LoginError as error:
                outcome["error"] = error
                await stream.send(_page("400 Bad Request", "Login failed", str(error)))
            done.set()

    async with listener:
        with anyio.fail_after(wait_seconds):
            try:
                async with anyio.create_task_group() as group:
                    group.start_soon(listener.serve, handle)
                    await open_url(authorize_url(auth_url, redirect=redirect, state=state, pkce=pkce))
                    await done.wait()
                    group.cancel_scope.cancel()
            except TimeoutError:
                raise LoginError(f"no login callback within {wait_seconds:.0f} s") from None
    if "error" in outcome:
        raise outcome["error"]
    return await exchange_code(
        client, auth_url, code=outcome["code"], verifier=pkce.verifier, redirect=redirect
    )


async def login_with_pasted_redirect(
    client: httpx.AsyncClient,
    *,
    auth_url: str,
    announce: Announce,
    read_line: Callable[[], Awaitable[str]],
    port: int = DEFAULT_CALLBACK_PORT,
) -> Tokens:
    """Print the authorize URL; the user opens it anywhere, and pastes back the URL the browser
    was sent to (``http://localhost:1455/auth/callback?code=...``, which fails to load there)."""
    pkce, state = new_pkce(), new_state()
    redirect = redirect_uri(port)
    announce(
        "Open this URL in a browser and log in:\n\n  "
        + authorize_url(auth_url, redirect=redirect, state=state, pkce=pkce)
        + "\n\nThe browser then goes to a localhost address that does not load: copy that whole "
        "address from its address bar and paste it here."
    )
    pasted = await read_line()
    code = code_from_callback(pasted, state)
    return await exchange_code(client, auth_url, code=code, verifier=pkce.verifier, redirect=redirect)


class DeviceFlowUnavailable(Exception):
    """The OAuth server offers no device-code flow for this client."""


async def login_with_device_code(
    client: httpx.AsyncClient,
    *,
    auth_url: str,
    announce: Announce,
    min_interval: float = 1.0,
    wait_seconds: float = DEVICE_LOGIN_TIMEOUT,
) -> Tokens:
    """The device-code flow: show a code to enter at ``{auth_url}/codex/device``, poll until the
    user has done so, then trade the code it yields for tokens."""
    base = auth_url.rstrip("/")
    try:
        reply = await client.post(f"{base}/api/accounts/deviceauth/usercode", json={"client_id": CLIENT_ID})
    except httpx.HTTPError as error:
        raise LoginError(f"could not reach the OAuth server: {type(error).__name__}") from None
    started: Any = reply.json() if reply.status_code == 200 and _is_json(reply) else None
    if not isinstance(started, dict):
        raise DeviceFlowUnavailable(f"device login not offered (HTTP {reply.status_code})")
    device_auth_id = started.get("device_auth_id")
    user_code = started.get("user_code") or started.get("usercode")
    if not isinstance(device_auth_id, str) or not isinstance(user_code, str):
        raise DeviceFlowUnavailable("device login answer lacks its codes")
    try:
        interval = max(float(started.get("interval", 5)), min_interval)
    except (TypeError, ValueError):
        interval = max(5.0, min_interval)
    announce(f"Open {base}/codex/device in a browser and enter the code: {user_code}")
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            poll = await client.post(
                f"{base}/api/accounts/deviceauth/token",
                json={"device_auth_id": device_auth_id, "user_code": user_code},
            )
        except httpx.HTTPError as error:
            raise LoginError(f"could not reach the OAuth server: {type(error).__name__}") from None
        if 200 <= poll.status_code < 300:
            break
        if poll.status_code not in (403, 404):
            raise LoginError(f"device login failed (HTTP {poll.status_code})")
        if time.monotonic() + interval > deadline:
            raise LoginError(f"the device code was not entered within {wait_seconds / 60:.0f} minutes")
        await anyio.sleep(interval)
    granted: Any = poll.json() if _is_json(poll) else None
    if not isinstance(granted, dict) or not all(
        isinstance(granted.get(key), str) for key in ("authorization_code", "code_verifier")
    ):
        raise LoginError("device login answer lacks its authorization code")
    return await exchange_code(
        client,
        auth_url,
        code=granted["authorization_code"],
        verifier=granted["code_verifier"],
        redirect=f"{base}{DEVICE_REDIRECT_PATH}",
    )


def _is_json(reply: httpx.Response) -> bool:
    try:
        reply.json()
    except ValueError:
        return False
    return True
