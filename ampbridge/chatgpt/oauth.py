"""OpenAI's OAuth server as the Codex CLI uses it: PKCE, the authorize URL, and the token
endpoint (code exchange and refresh). The interactive flows are in ``login_flows``.

Error messages name the OAuth error code and never carry a token or the raw reply body.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from .credentials import Tokens

CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"  # the Codex CLI's public client; no secret
DEFAULT_AUTH_URL = "https://auth.openai.com"
SCOPES = "openid email profile offline_access"
REFRESH_SCOPE = "openid profile email"
CALLBACK_PATH = "/auth/callback"
DEFAULT_CALLBACK_PORT = 1455  # the client is registered for http://localhost:1455/auth/callback
TOKEN_TIMEOUT = 30.0
# A refresh rejected with one of these will never succeed: the user must log in again.
PERMANENT_REFRESH_ERRORS = frozenset(
    {"refresh_token_expired", "refresh_token_reused", "refresh_token_invalidated", "invalid_grant"}
)


class LoginError(Exception):
    """A login could not be completed; the message says why, without secrets."""


class RefreshRejected(Exception):
    """The OAuth server refused the refresh token for good (``code`` says why)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"refresh token rejected ({code}); run `ampbridge login chatgpt` again")
        self.code = code


class RefreshFailed(Exception):
    """A refresh that may work later (network, server error)."""


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def new_pkce() -> Pkce:
    """A PKCE pair: 96 random bytes as the verifier, its SHA-256 as the S256 challenge."""
    verifier = _b64url(secrets.token_bytes(96))
    return Pkce(verifier, _b64url(hashlib.sha256(verifier.encode("ascii")).digest()))


def new_state() -> str:
    return _b64url(secrets.token_bytes(24))


def redirect_uri(port: int) -> str:
    return f"http://localhost:{port}{CALLBACK_PATH}"


def authorize_url(auth_url: str, *, redirect: str, state: str, pkce: Pkce) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": redirect,
            "scope": SCOPES,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
            "state": state,
            "prompt": "login",
            "id_token_add_organizations": "true",
            "codex_cli_simplified_flow": "true",
        }
    )
    return f"{auth_url.rstrip('/')}/oauth/authorize?{query}"


def _error_code(reply: httpx.Response) -> str:
    """The OAuth error code of a failed reply: ``error.code``, ``error`` or ``code``."""
    try:
        body: Any = reply.json()
    except ValueError:
        return f"HTTP {reply.status_code}"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return str(error["code"])
        if isinstance(error, str):
            return error
        if isinstance(body.get("code"), str):
            return str(body["code"])
    return f"HTTP {reply.status_code}"


def _tokens_from_reply(reply: httpx.Response, now: float, previous: Tokens | None) -> Tokens:
    try:
        body: Any = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
        raise RefreshFailed("the token endpoint answered without an access token")

    def text(key: str) -> str | None:
        value = body.get(key)
        return value if isinstance(value, str) and value else None

    expires_in = body.get("expires_in")
    seconds = float(expires_in) if isinstance(expires_in, int | float) else None
    if previous is not None:
        return previous.rotated(
            id_token=text("id_token"),
            access_token=body["access_token"],
            refresh_token=text("refresh_token"),
            expires_in=seconds,
            now=now,
        )
    id_token, refresh = text("id_token"), text("refresh_token")
    if id_token is None or refresh is None:
        raise LoginError("the token endpoint answered without an id token or refresh token")
    return Tokens(
        id_token=id_token,
        access_token=body["access_token"],
        refresh_token=refresh,
        expires_at=now + seconds if seconds is not None else None,
        last_refresh=now,
    )


async def exchange_code(
    client: httpx.AsyncClient, auth_url: str, *, code: str, verifier: str, redirect: str
) -> Tokens:
    """Trade an authorization code (and its PKCE verifier) for tokens."""
    form = {
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "code": code,
        "redirect_uri": redirect,
        "code_verifier": verifier,
    }
    try:
        reply = await client.post(
            f"{auth_url.rstrip('/')}/oauth/token",
            data=form,
            headers={"Accept": "application/json"},
            timeout=TOKEN_TIMEOUT,
        )
    except httpx.HTTPError as error:
        raise LoginError(f"could not reach the OAuth server: {type(error).__name__}") from None
    if reply.status_code != 200:
        raise LoginError(f"the OAuth server refused the login code ({_error_code(reply)})")
    try:
        return _tokens_from_reply(reply, time.time(), None)
    except RefreshFailed as error:
        raise LoginError(str(error)) from None


async def refresh_tokens(client: httpx.AsyncClient, auth_url: str, tokens: Tokens, *, now: float) -> Tokens:
    """One refresh: the rotated tokens, or ``RefreshRejected`` / ``RefreshFailed``.

    Sent form-encoded like CLIProxyAPI (the Codex CLI sends the same four fields as JSON; the
    server takes either)."""
    form = {
        "client_id": CLIENT_ID,
        "grant_type": "refresh_token",
        "refresh_token": tokens.refresh_token,
        "scope": REFRESH_SCOPE,
    }
    try:
        reply = await client.post(
            f"{auth_url.rstrip('/')}/oauth/token",
            data=form,
            headers={"Accept": "application/json"},
            timeout=TOKEN_TIMEOUT,
        )
    except httpx.HTTPError as error:
        raise RefreshFailed(f"could not reach the OAuth server: {type(error).__name__}") from None
    if reply.status_code != 200:
        code = _error_code(reply)
        if reply.status_code in (400, 401) and code in PERMANENT_REFRESH_ERRORS:
            raise RefreshRejected(code)
        raise RefreshFailed(f"the OAuth server answered the refresh with {code}")
    return _tokens_from_reply(reply, now, tokens)
