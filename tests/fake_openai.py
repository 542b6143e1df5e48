"""Loopback fakes of OpenAI's OAuth server and of the ChatGPT Codex backend, written from
/work/shared/reference/chatgpt-subscription.md.

``FakeAuth`` issues JWTs shaped like OpenAI's (claims under ``https://api.openai.com/auth``),
checks PKCE, rotates refresh tokens (a used one is answered ``refresh_token_reused``) and offers
the device-code flow unless told not to. ``FakeCodex`` takes ``POST /responses`` only the way the
reference says the real backend does: a live access token (else 401), a matching
``Chatgpt-Account-Id``, ``stream: true``, ``store: false`` (400 ``{"detail":"Store must be set to
false"}``), ``instructions`` present, ``input`` a list, no unsupported parameter
(``{"detail":"Unsupported parameter: ..."}``), a model of the account's plan. Where the reference
is unsure (Originator, User-Agent, a ``system`` role) the fake is strict: it wants what
ampbridge promises to send. It can be told to answer a usage limit for an account, as a 429 or as
an ``error`` event inside a 200 stream.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from .servers import Recorded, RecordingServer, ServerThread, respond, stream

CLIENT_ID = "app_EMoamEEZ73f0CkXaXp7hrann"
AUTH_CLAIM = "https://api.openai.com/auth"
PROFILE_CLAIM = "https://api.openai.com/profile"
UNSUPPORTED = (
    "max_output_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "truncation",
    "user",
    "previous_response_id",
    "prompt_cache_retention",
    "safety_identifier",
    "stream_options",
    "context_management",
)
PLAN_MODELS = {
    "free": {"gpt-5.4-mini", "gpt-5.5", "codex-auto-review"},
    "plus": {"gpt-5.3-codex-spark", "gpt-5.4", "gpt-5.4-mini", "gpt-5.5", "codex-auto-review"},
    "pro": {"gpt-5.3-codex-spark", "gpt-5.4", "gpt-5.4-mini", "gpt-5.5", "codex-auto-review"},
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(payload: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    return f"{header}.{b64url(json.dumps(payload).encode())}.{b64url(b'fake-signature')}"


@dataclass
class FakeAccount:
    account_id: str
    email: str
    plan: str = "plus"


@dataclass
class Issued:
    account_id: str
    access_expires: float


@dataclass
class FakeAuth:
    """The OAuth server. ``login_as`` is the account the next login (browser or device) yields."""

    accounts: dict[str, FakeAccount] = field(default_factory=dict)
    login_as: str = ""
    access_lifetime: float = 10 * 24 * 3600
    device_flow: bool = True
    pending_polls: int = 1
    codes: dict[str, tuple[str, str, str]] = field(
        default_factory=dict
    )  # code -> (account, challenge, redirect)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # live refresh token -> account
    used_refresh_tokens: set[str] = field(default_factory=set)
    revoked_refresh_tokens: set[str] = field(default_factory=set)
    access_tokens: dict[str, Issued] = field(default_factory=dict)
    refresh_calls: list[dict[str, str]] = field(default_factory=list)
    exchange_calls: list[dict[str, str]] = field(default_factory=list)
    device_polls: int = 0
    issued_secrets: list[str] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=itertools.count)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_account(self, account_id: str, email: str, plan: str = "plus") -> FakeAccount:
        account = FakeAccount(account_id, email, plan)
        self.accounts[account_id] = account
        self.login_as = self.login_as or account_id
        return account

    def issue(
        self, account_id: str, *, lifetime: float | None = None, issued_ago: float = 0
    ) -> dict[str, Any]:
        """A token reply for ``account_id`` (also what tests put in files to start from);
        ``issued_ago`` back-dates it, so that it is close to expiry."""
        account = self.accounts[account_id]
        now = time.time() - issued_ago
        life = self.access_lifetime if lifetime is None else lifetime
        n = next(self.counter)
        auth = {
            "chatgpt_account_id": account.account_id,
            "chatgpt_plan_type": account.plan,
            "user_id": f"user-{n}",
        }
        access = make_jwt(
            {
                "iat": int(now),
                "exp": int(now + life),
                "sub": f"sub-{account_id}",
                AUTH_CLAIM: auth,
                PROFILE_CLAIM: {"email": account.email},
                "jti": f"at-{n}",
            }
        )
        id_token = make_jwt(
            {"iat": int(now), "exp": int(now + 3600), "email": account.email, AUTH_CLAIM: auth}
        )
        refresh = f"rt-{account_id}-{n}-secretrefresh"
        with self.lock:
            self.refresh_tokens[refresh] = account_id
            self.access_tokens[access] = Issued(account_id, now + life)
            self.issued_secrets.extend([access, refresh, id_token])
        return {
            "access_token": access,
            "refresh_token": refresh,
            "id_token": id_token,
            "token_type": "Bearer",
            "expires_in": int(life),
        }

    def account_of(self, access_token: str) -> str | None:
        issued = self.access_tokens.get(access_token)
        if issued is None or issued.access_expires < time.time():
            return None
        return issued.account_id

    def server(self) -> RecordingServer:
        server = RecordingServer("fake-openai-auth")
        server.route(lambda m, p: m == "GET" and p == "/oauth/authorize", self.authorize)
        server.route(lambda m, p: m == "POST" and p == "/oauth/token", self.token)
        server.route(lambda m, p: m == "POST" and p == "/api/accounts/deviceauth/usercode", self.usercode)
        server.route(lambda m, p: m == "POST" and p == "/api/accounts/deviceauth/token", self.device_token)
        return server.freeze()

    async def authorize(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        q = {k: v[0] for k, v in parse_qs(rec.query.decode()).items()}
        redirect = urlsplit(q.get("redirect_uri", ""))
        problems = [
            q.get("client_id") != CLIENT_ID and "client_id",
            q.get("response_type") != "code" and "response_type",
            q.get("code_challenge_method") != "S256" and "code_challenge_method",
            not q.get("code_challenge") and "code_challenge",
            not q.get("state") and "state",
            "offline_access" not in q.get("scope", "").split() and "scope",
            # The real client is registered for http://localhost:1455 only; tests use other ports.
            (redirect.scheme, redirect.hostname, redirect.path) != ("http", "localhost", "/auth/callback")
            and "redirect_uri",
        ]
        bad = [p for p in problems if p]
        if bad:
            await respond(send, 400, json.dumps({"error": "invalid_request", "fields": bad}).encode())
            return
        code = f"code-{next(self.counter)}"
        self.codes[code] = (self.login_as, q["code_challenge"], q["redirect_uri"])
        location = (
            q["redirect_uri"] + "?" + urlencode({"code": code, "scope": q["scope"], "state": q["state"]})
        )
        await respond(send, 302, b"", headers=[(b"location", location.encode())])

    async def token(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        content_type = rec.header("content-type") or ""
        if content_type.startswith("application/json"):
            form = {k: str(v) for k, v in rec.json().items()}
        else:
            form = {k: v[0] for k, v in parse_qs(rec.body.decode()).items()}
        if form.get("client_id") != CLIENT_ID:
            await respond(send, 401, b'{"error":"invalid_client"}')
        elif form.get("grant_type") == "authorization_code":
            await self._exchange(send, form)
        elif form.get("grant_type") == "refresh_token":
            await self._refresh(send, form)
        else:
            await respond(send, 400, b'{"error":"unsupported_grant_type"}')

    async def _exchange(self, send: Send, form: dict[str, str]) -> None:
        self.exchange_calls.append(form)
        entry = self.codes.pop(form.get("code", ""), None)
        verifier = form.get("code_verifier", "")
        if entry is None:
            await respond(send, 400, b'{"error":"invalid_grant","error_description":"unknown code"}')
            return
        account_id, challenge, redirect = entry
        if (
            b64url(hashlib.sha256(verifier.encode()).digest()) != challenge
            or form.get("redirect_uri") != redirect
        ):
            await respond(
                send, 400, b'{"error":"invalid_grant","error_description":"PKCE or redirect mismatch"}'
            )
            return
        await respond(send, 200, json.dumps(self.issue(account_id)).encode())

    async def _refresh(self, send: Send, form: dict[str, str]) -> None:
        token = form.get("refresh_token", "")
        with self.lock:
            self.refresh_calls.append(form)
            account_id = self.refresh_tokens.pop(token, None)
            if account_id is not None and token in self.revoked_refresh_tokens:
                account_id = None
            code = (
                "refresh_token_reused" if token in self.used_refresh_tokens else "refresh_token_invalidated"
            )
            if account_id is not None:
                self.used_refresh_tokens.add(token)
        if account_id is None or form.get("scope") != "openid profile email":
            body = {
                "error": {
                    "message": "Your refresh token could not be used.",
                    "type": "invalid_request_error",
                    "code": code if account_id is None else "invalid_scope",
                }
            }
            await respond(send, 401, json.dumps(body).encode())
            return
        await respond(send, 200, json.dumps(self.issue(account_id)).encode())

    async def usercode(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        if not self.device_flow:
            await respond(send, 404, b'{"detail":"Not Found"}')
            return
        if rec.json().get("client_id") != CLIENT_ID:
            await respond(send, 400, b'{"error":"invalid_client"}')
            return
        body = {"device_auth_id": "dev-1", "user_code": "ABCD-1234", "interval": "0"}
        await respond(send, 200, json.dumps(body).encode())

    async def device_token(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        payload = rec.json()
        if payload != {"device_auth_id": "dev-1", "user_code": "ABCD-1234"}:
            await respond(send, 400, b'{"error":"invalid_request"}')
            return
        self.device_polls += 1
        if self.device_polls <= self.pending_polls:
            await respond(send, 403, b'{"error":"authorization_pending"}')
            return
        verifier = b64url(b"device-verifier-" + str(self.device_polls).encode())
        challenge = b64url(hashlib.sha256(verifier.encode()).digest())
        code = f"device-code-{next(self.counter)}"
        host = dict(rec.headers).get("host", "")
        self.codes[code] = (self.login_as, challenge, f"http://{host}/deviceauth/callback")
        body = {"authorization_code": code, "code_verifier": verifier, "code_challenge": challenge}
        await respond(send, 200, json.dumps(body).encode())


def _responses_events(model: str, text: str = "OK") -> list[bytes]:
    """A Responses stream as the backend sends it (its completed event has an empty output)."""
    item = {
        "id": "msg_1",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }
    base = {"id": "resp_1", "object": "response", "created_at": 1795554000, "model": model}
    usage = {
        "input_tokens": 10,
        "output_tokens": 1,
        "total_tokens": 11,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**base, "status": "in_progress", "output": []}},
        {"type": "response.in_progress", "response": {**base, "status": "in_progress", "output": []}},
        {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {
            "type": "response.content_part.added",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []},
        },
        {
            "type": "response.output_text.delta",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "delta": text,
        },
        {
            "type": "response.output_text.done",
            "item_id": "msg_1",
            "output_index": 0,
            "content_index": 0,
            "text": text,
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {
            "type": "response.completed",
            "response": {**base, "status": "completed", "output": [], "usage": usage},
        },
    ]
    return [
        f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': i})}\n\n".encode()
        for i, e in enumerate(events)
    ]


@dataclass
class FakeCodex:
    """The Codex backend at ``{url}/responses``; checks tokens against ``auth``."""

    auth: FakeAuth
    usage_limited: dict[str, tuple[int, bool]] = field(
        default_factory=dict
    )  # account -> (resets_in, in_stream)
    served: list[str] = field(default_factory=list)  # account ids of the calls answered 200
    # When set, a stream stops after its first text delta until the test sets this event: a
    # client that sees that delta before the rest was sent proves the relay streams.
    hold: threading.Event | None = None

    def limit(self, account_id: str, resets_in_seconds: int = 3600, *, in_stream: bool = False) -> None:
        self.usage_limited[account_id] = (resets_in_seconds, in_stream)

    def server(self) -> RecordingServer:
        server = RecordingServer("fake-codex")
        server.route(lambda m, p: m == "POST" and p.endswith("/responses"), self.responses)
        return server.freeze()

    async def responses(self, scope: Scope, receive: Receive, send: Send, rec: Recorded) -> None:
        authorization = rec.header("authorization") or ""
        account_id = self.auth.account_of(authorization.removeprefix("Bearer "))
        if account_id is None:
            body = {
                "error": {
                    "message": "Provided authentication token is expired or invalid.",
                    "type": "invalid_request_error",
                    "code": "token_expired",
                }
            }
            await respond(send, 401, json.dumps(body).encode())
            return
        problem = self._problem(rec, account_id)
        if problem is not None:
            await respond(send, 400, json.dumps({"detail": problem}).encode())
            return
        payload = rec.json()
        if account_id in self.usage_limited:
            resets_in, in_stream = self.usage_limited[account_id]
            await self._usage_limit(send, account_id, resets_in, in_stream, payload["model"])
            return
        self.served.append(account_id)
        events = _responses_events(payload["model"], f"OK from {account_id}")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
            if self.hold is not None and b"output_text.delta" in event:
                await anyio.to_thread.run_sync(self.hold.wait, 10)
        await send({"type": "http.response.body", "body": b""})

    def _problem(self, rec: Recorded, account_id: str) -> str | None:
        if rec.header("chatgpt-account-id") != account_id:
            return "Missing or mismatched chatgpt-account-id header"
        if not (rec.header("content-type") or "").startswith("application/json"):
            return "Content-Type must be application/json"
        if rec.header("accept") != "text/event-stream":
            return "Accept must be text/event-stream"
        originator = rec.header("originator")
        if not originator or not (rec.header("user-agent") or "").startswith(originator + "/"):
            return "Codex clients must send Originator and a matching User-Agent"
        try:
            payload = rec.json()
        except ValueError:
            return "Invalid JSON body"
        for name in UNSUPPORTED:
            if name in payload:
                return f"Unsupported parameter: {name}"
        if payload.get("store") is not False:
            return "Store must be set to false"
        if payload.get("stream") is not True:
            return "Stream must be set to true"
        if not isinstance(payload.get("instructions"), str):
            return "Instructions are required"
        if not isinstance(payload.get("input"), list):
            return "Input must be a list"
        if any(isinstance(i, dict) and i.get("role") == "system" for i in payload["input"]):
            return "System messages are not supported; use developer messages"
        if "reasoning.encrypted_content" not in (payload.get("include") or []):
            return "include must request reasoning.encrypted_content when store is false"
        if payload.get("service_tier") not in (None, "priority"):
            return f"Unsupported service_tier: {payload['service_tier']}"
        plan = self.auth.accounts[account_id].plan
        if payload.get("model") not in PLAN_MODELS.get(plan, PLAN_MODELS["plus"]):
            return f"The '{payload.get('model')}' model is not supported when using Codex with a ChatGPT account."
        if rec.header("session-id") != payload.get("prompt_cache_key"):
            return "Session-Id must match prompt_cache_key"
        return None

    async def _usage_limit(
        self, send: Send, account_id: str, resets_in: int, in_stream: bool, model: str
    ) -> None:
        plan = self.auth.accounts[account_id].plan
        error = {
            "type": "usage_limit_reached",
            "message": "The usage limit has been reached",
            "plan_type": plan,
            "resets_at": int(time.time()) + resets_in,
            "resets_in_seconds": resets_in,
            "eligible_promo": None,
        }
        if not in_stream:
            headers = [
                (b"x-codex-plan-type", plan.encode()),
                (b"x-codex-primary-used-percent", b"100"),
                (b"x-codex-primary-window-minutes", b"300"),
                (b"x-codex-primary-reset-after-seconds", str(resets_in).encode()),
            ]
            await respond(send, 429, json.dumps({"error": error}).encode(), headers=headers)
            return
        created = {
            "type": "response.created",
            "sequence_number": 0,
            "response": {
                "id": "resp_x",
                "object": "response",
                "status": "in_progress",
                "model": model,
                "output": [],
            },
        }
        failure = {"type": "error", "sequence_number": 1, "error": error}
        await stream(
            send, [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in (created, failure)]
        )


class WithClient:
    """Runs an app that needs an ``httpx.AsyncClient``, opening one in its server's lifespan
    (the way the standalone app hands its shared client to its backends)."""

    def __init__(self, build: Callable[[Callable[[], httpx.AsyncClient]], ASGIApp]) -> None:
        self.http: httpx.AsyncClient | None = None
        self.app = build(self.client)

    def client(self) -> httpx.AsyncClient:
        assert self.http is not None, "lifespan not run"
        return self.http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        await receive()
        self.http = httpx.AsyncClient(trust_env=False)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await self.http.aclose()
        await send({"type": "lifespan.shutdown.complete"})


@dataclass
class Fakes:
    auth: FakeAuth
    codex: FakeCodex
    auth_server: RecordingServer
    codex_server: RecordingServer
    auth_url: str
    codex_url: str


@contextmanager
def openai_fakes() -> Iterator[Fakes]:
    """The fake OAuth server and the fake Codex backend, each on its own 127.0.0.1 port."""
    auth = FakeAuth()
    codex = FakeCodex(auth)
    auth_server, codex_server = auth.server(), codex.server()
    with ServerThread(auth_server) as auth_thread, ServerThread(codex_server) as codex_thread:
        yield Fakes(
            auth, codex, auth_server, codex_server, auth_thread.url, codex_thread.url + "/backend-api/codex"
        )
