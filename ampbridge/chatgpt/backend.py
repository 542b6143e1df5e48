"""``ChatGPTBackend``: an ASGI app that serves OpenAI Responses calls (``POST /v1/responses``)
with ChatGPT subscriptions, through OpenAI's Codex backend (``{base_url}/responses``).

Each call is reshaped to the backend's dialect and sent with the Codex headers for one account
of the pool. A usage limit (a 429, or an ``error`` event before any output of a 200 stream) cools
that account down and the call goes to the next; a rejected access token is refreshed once. The
reply is relayed event by event to a client that streamed, or assembled into one Responses object
for one that did not. Errors are answered in the OpenAI shape with the backend's message.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import httpx
from starlette.types import Receive, Scope, Send

from ..errors import send_json
from ..jsonutil import dump_json
from ..models import split_thinking_suffix
from ..request_body import read_request_body
from .accounts import RELOGIN_HINT, Account, AccountPool, AccountUnavailable
from .credentials import Tokens
from .dialect import (
    DialectError,
    Reshaped,
    ResponseAssembler,
    SseEvent,
    SseReader,
    UpstreamError,
    encode_event,
    error_from_event,
    error_from_reply,
    openai_error,
    reshape_request,
)
from .oauth import DEFAULT_AUTH_URL
from .store import CredentialStore

logger = logging.getLogger("ampbridge.chatgpt")

DEFAULT_BASE_URL = "https://chatgpt.com/backend-api/codex"
CODEX_VERSION = "0.146.0"
ORIGINATOR = "codex-tui"
RESPONSES_PATH = "/v1/responses"
MAX_ERROR_BODY = 65536
RATE_LIMIT_PAUSE = 30.0  # a short rate limit (not a usage limit) takes an account out this long
# Events a stream may open with before its first output; a usage-limit error arrives among them.
_PREAMBLE_EVENTS = frozenset({"response.created", "response.in_progress"})


def codex_user_agent(originator: str = ORIGINATOR, version: str = CODEX_VERSION) -> str:
    """A Codex-shaped User-Agent: ``<originator>/<version> (<OS> <release>; <arch>) <terminal>``."""
    system = {"Darwin": "Mac OS"}.get(platform.system(), platform.system() or "Linux")
    return f"{originator}/{version} ({system} {platform.release()}; {platform.machine()}) ampbridge"


@dataclass
class _MoveOn:
    """This account could not take the call; try the next one."""

    error: UpstreamError


class ChatGPTBackend:
    """Serves ``POST /v1/responses`` for the models the logged-in accounts' plans offer."""

    def __init__(
        self,
        data_dir: Path,
        *,
        client: Callable[[], httpx.AsyncClient],
        base_url: str = DEFAULT_BASE_URL,
        auth_url: str = DEFAULT_AUTH_URL,
        accounts: Sequence[str] | None = None,
        max_body_size: int = 64 * 1024 * 1024,
        originator: str = ORIGINATOR,
        user_agent: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"chatgpt base_url must be an http(s) URL, not {base_url!r}")
        if not auth_url.startswith(("http://", "https://")):
            raise ValueError(f"chatgpt auth_url must be an http(s) URL, not {auth_url!r}")
        self.client = client
        self.responses_url = base_url.rstrip("/") + "/responses"
        self.max_body_size = max_body_size
        self.clock = clock
        self.pool = AccountPool(
            CredentialStore(data_dir), client=client, auth_url=auth_url, names=accounts, clock=clock
        )
        self.fixed_headers = {
            "Originator": originator,
            "User-Agent": user_agent or codex_user_agent(originator),
            "Accept": "text/event-stream",
            "Content-Type": "application/json",
        }

    def __repr__(self) -> str:
        return f"ChatGPTBackend(url={self.responses_url!r}, store={self.pool.store!r})"

    def serves(self, model: str) -> bool:
        """Whether a logged-in account (not cooling down) offers ``model`` (a ``(effort)``
        suffix allowed)."""
        return self.pool.serves(split_thinking_suffix(model)[0])

    def model_names(self) -> list[str]:
        return self.pool.offered_models()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["path"] != RESPONSES_PATH:
            await send_json(send, 404, openai_error(f"no route {scope['path']}", "invalid_request_error"))
            return
        if scope["method"] != "POST":
            await send_json(send, 405, openai_error("use POST", "invalid_request_error"))
            return
        body = await read_request_body(scope, receive, send, self.max_body_size)
        if body is None:
            return
        if body.payload is None:
            await send_json(send, 400, openai_error("the body is not a JSON object", "invalid_request_error"))
            return
        try:
            reshaped = reshape_request(body.payload, session_hint=_session_hint(scope))
        except DialectError as error:
            await send_json(send, 400, openai_error(str(error), "invalid_request_error"))
            return
        body.payload = None
        await self._serve(reshaped, receive, send)

    async def _serve(self, call: Reshaped, receive: Receive, send: Send) -> None:
        content = dump_json(call.body)
        last: UpstreamError | None = None
        for account in self.pool.candidates(call.model):
            try:
                tokens = await self.pool.tokens_for(account)
            except AccountUnavailable as unavailable:
                last = UpstreamError(503, "api_error", "account_unavailable", str(unavailable))
                continue
            outcome = await self._try_account(account, tokens, call, content, receive, send)
            if outcome is None:
                return
            last = outcome.error
        await self._answer_unserved(call, last, send)

    async def _answer_unserved(self, call: Reshaped, last: UpstreamError | None, send: Send) -> None:
        retry_after = self.pool.retry_after(call.model)
        if retry_after is not None and (last is None or last.status == 429):
            seconds = max(1, int(retry_after + 0.999))
            message = last.message if last is not None else "every ChatGPT account is cooling down"
            await send_json(
                send,
                429,
                openai_error(
                    message, "usage_limit_reached", "usage_limit_reached", resets_in_seconds=seconds
                ),
                [(b"retry-after", str(seconds).encode())],
            )
        elif last is not None:
            await send_json(send, last.status, openai_error(last.message, last.type, last.code))
        elif not any(self.pool.offers(a, call.model) for a in self.pool.accounts()):
            await send_json(
                send,
                404,
                openai_error(
                    f"no logged-in ChatGPT account offers {call.model}",
                    "invalid_request_error",
                    "model_not_found",
                ),
            )
        else:
            await send_json(
                send,
                503,
                openai_error(
                    f"no ChatGPT account is usable: {RELOGIN_HINT}", "api_error", "account_unavailable"
                ),
            )

    def _headers(self, account: Account, tokens: Tokens, call: Reshaped) -> dict[str, str]:
        account_id = tokens.identity.account_id or account.record.account_id or ""
        return {
            **self.fixed_headers,
            "Authorization": f"Bearer {tokens.access_token}",
            "Chatgpt-Account-Id": account_id,
            "Session-Id": call.session_id,
        }

    async def _try_account(
        self, account: Account, tokens: Tokens, call: Reshaped, content: bytes, receive: Receive, send: Send
    ) -> _MoveOn | None:
        client = self.client()
        for attempt in range(2):
            request = client.build_request(
                "POST", self.responses_url, content=content, headers=self._headers(account, tokens, call)
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.HTTPError as error:
                logger.warning(
                    "chatgpt account %s: backend unreachable (%s)", account.name, type(error).__name__
                )
                return _MoveOn(
                    UpstreamError(
                        502, "api_error", None, f"ChatGPT backend unreachable: {type(error).__name__}"
                    )
                )
            try:
                if response.status_code == 401 and attempt == 0:
                    await response.aread()
                    try:
                        tokens = await self.pool.refresh_after_rejection(account, tokens)
                    except AccountUnavailable as unavailable:
                        return _MoveOn(UpstreamError(401, "authentication_error", None, str(unavailable)))
                    continue
                if response.status_code != 200:
                    return await self._failed_reply(account, response, send)
                return await self._relay(account, response, call, receive, send)
            finally:
                await response.aclose()
        return None  # not reached: the second attempt always returns

    async def _failed_reply(self, account: Account, response: httpx.Response, send: Send) -> _MoveOn | None:
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_ERROR_BODY:
                break
        error = error_from_reply(response.status_code, body, now=self.clock())
        moved = self._account_problem(account, error)
        if moved is not None:
            return moved
        await send_json(send, error.status, openai_error(error.message, error.type, error.code))
        return None

    def _account_problem(self, account: Account, error: UpstreamError) -> _MoveOn | None:
        """Cool an account down for errors that are its own (usage limits, rate limits, refused
        tokens or workspaces): the call then goes to the next account."""
        if error.usage_limit:
            until = error.resets_at if error.resets_at and error.resets_at > self.clock() else None
            self.pool.cool_down(account, until or self.clock() + RATE_LIMIT_PAUSE, "usage limit reached")
            return _MoveOn(error)
        if error.status == 429:
            self.pool.cool_down(account, self.clock() + RATE_LIMIT_PAUSE, "rate limited")
            return _MoveOn(error)
        if error.status in (401, 403):
            logger.warning("chatgpt account %s: refused (HTTP %d)", account.name, error.status)
            return _MoveOn(error)
        return None

    async def _relay(
        self, account: Account, response: httpx.Response, call: Reshaped, receive: Receive, send: Send
    ) -> _MoveOn | None:
        reader = SseReader()
        chunks = response.aiter_raw()
        opening: list[SseEvent] = []
        # Hold the opening events until the first one that is not preamble: a usage limit then
        # still lets the call go to another account, as nothing was sent to the client yet.
        async for chunk in chunks:
            events = list(reader.feed(chunk))
            opening.extend(events)
            first_real = next((e for e in opening if e.type not in _PREAMBLE_EVENTS), None)
            if first_real is not None:
                failure = error_from_event(first_real, now=self.clock())
                if failure is not None:
                    moved = self._account_problem(account, failure)
                    if moved is not None:
                        return moved
                break
        if call.streamed:
            await self._stream(opening, chunks, reader, receive, send)
        else:
            await self._assemble(opening, chunks, reader, send)
        return None

    async def _stream(
        self,
        opening: list[SseEvent],
        chunks: AsyncIterator[bytes],
        reader: SseReader,
        receive: Receive,
        send: Send,
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            }
        )

        async def relay(group: anyio.abc.TaskGroup) -> None:
            for event in opening:
                await send({"type": "http.response.body", "body": event.raw, "more_body": True})
            try:
                async for chunk in chunks:
                    for event in reader.feed(chunk):
                        await send({"type": "http.response.body", "body": event.raw, "more_body": True})
                for event in reader.finish():
                    await send({"type": "http.response.body", "body": event.raw, "more_body": True})
            except httpx.HTTPError as error:
                failure = {
                    "type": "error",
                    "error": {
                        "type": "api_error",
                        "message": f"ChatGPT backend stream broke: {type(error).__name__}",
                    },
                }
                await send({"type": "http.response.body", "body": encode_event(failure), "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            group.cancel_scope.cancel()

        async def watch_disconnect(group: anyio.abc.TaskGroup) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(relay, group)
            group.start_soon(watch_disconnect, group)

    async def _assemble(
        self, opening: list[SseEvent], chunks: AsyncIterator[bytes], reader: SseReader, send: Send
    ) -> None:
        assembler = ResponseAssembler()
        for event in opening:
            assembler.add(event, now=self.clock())
        try:
            async for chunk in chunks:
                for event in reader.feed(chunk):
                    assembler.add(event, now=self.clock())
            for event in reader.finish():
                assembler.add(event, now=self.clock())
        except httpx.HTTPError:
            pass  # what arrived is judged below: without a completed event it is an error
        result = assembler.result()
        if isinstance(result, UpstreamError):
            await send_json(send, result.status, openai_error(result.message, result.type, result.code))
        else:
            await send_json(send, 200, dump_json(result))


def _session_hint(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name in (b"session_id", b"session-id", b"x-amp-thread-id"):
            return str(value.decode("latin-1"))
    return None
