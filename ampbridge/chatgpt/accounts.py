"""The pool of ChatGPT accounts a backend spends: whose turn it is, fresh tokens, cooldowns.

- Accounts are used in turn (round robin) among those that offer the model, are not cooling down
  and do not need a new login. The pool follows the store: a login or logout made by the
  ``ampbridge`` command while a server runs is seen at the next call.
- Tokens are refreshed before they expire, with one refresh per account in flight: an in-process
  lock plus the token file's ``fcntl`` lock (other ampbridge processes). Whoever gets the lock
  re-reads the file first, so waiters (and a Codex CLI that refreshed meanwhile) are not
  refreshed again: refresh tokens are single-use.
- A refresh the OAuth server rejects for good marks the account as needing a new login; the
  other accounts go on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
import httpx

from .codex_file import CodexFileError
from .credentials import Tokens
from .files import file_lock
from .oauth import RefreshFailed, RefreshRejected, refresh_tokens
from .plans import plan_models
from .store import AccountRecord, CredentialStore, StoreError

logger = logging.getLogger("ampbridge.chatgpt")

REFRESH_LEAD = 5 * 24 * 3600.0  # refresh when this close to expiry (at most half the lifetime)
REFRESH_AGE_WITHOUT_EXPIRY = 8 * 24 * 3600.0  # the Codex CLI's rule when no expiry is known
RELOGIN_HINT = "run `ampbridge login chatgpt`"


class AccountUnavailable(Exception):
    """This account cannot serve a call now; the message says why (no secrets)."""


@dataclass
class Account:
    record: AccountRecord
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    cooldown_until: float = 0.0
    cached: tuple[tuple[int, int], Tokens] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.record.name


class AccountPool:
    def __init__(
        self,
        store: CredentialStore,
        *,
        client: Callable[[], httpx.AsyncClient],
        auth_url: str,
        names: Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
        refresh_lead: float = REFRESH_LEAD,
    ) -> None:
        self.store = store
        self.client = client
        self.auth_url = auth_url
        self.names = list(names) if names is not None else None
        self.clock = clock
        self.refresh_lead = refresh_lead
        self._accounts: dict[str, Account] = {}
        self._version: tuple[int, int] | None = None
        self._turn = 0

    # --- which accounts ---------------------------------------------------------------

    def accounts(self) -> list[Account]:
        """The pool's accounts, re-read when the store folder changed."""
        version = self.store.version()
        if version != self._version:
            self._version = version
            fresh: dict[str, Account] = {}
            for record in self.store.records():
                if self.names is not None and not {record.name, record.email, record.account_id} & set(
                    self.names
                ):
                    continue
                account = self._accounts.get(record.name) or Account(record)
                account.record = record
                account.cooldown_until = max(account.cooldown_until, record.cooldown_until or 0.0)
                fresh[record.name] = account
            self._accounts = fresh
        return list(self._accounts.values())

    def offers(self, account: Account, model: str) -> bool:
        return model in plan_models(account.record.plan)

    def usable(self, account: Account) -> bool:
        return account.record.needs_login is None and account.cooldown_until <= self.clock()

    def serves(self, model: str) -> bool:
        """Whether some account can take a call for ``model`` now."""
        return any(self.offers(a, model) and self.usable(a) for a in self.accounts())

    def offered_models(self) -> list[str]:
        return sorted(
            {m for a in self.accounts() if a.record.needs_login is None for m in plan_models(a.record.plan)}
        )

    def candidates(self, model: str) -> list[Account]:
        """The accounts to try for one call, in turn: each call starts one further along."""
        ready = [a for a in self.accounts() if self.offers(a, model) and self.usable(a)]
        if not ready:
            return []
        start = self._turn % len(ready)
        self._turn += 1
        return ready[start:] + ready[:start]

    def retry_after(self, model: str) -> float | None:
        """Seconds until the first cooling account that offers ``model`` is back."""
        now = self.clock()
        waits = [
            a.cooldown_until - now
            for a in self.accounts()
            if self.offers(a, model) and a.record.needs_login is None and a.cooldown_until > now
        ]
        return min(waits) if waits else None

    def cool_down(self, account: Account, until: float, reason: str) -> None:
        account.cooldown_until = until
        logger.warning(
            "chatgpt account %s: %s; cooling down for %.0f s", account.name, reason, until - self.clock()
        )
        try:
            self.store.set_cooldown(account.record, until)
        except OSError as error:
            logger.warning("chatgpt account %s: cannot record the cooldown (%s)", account.name, error)

    # --- tokens -------------------------------------------------------------------------

    def _load(self, account: Account) -> Tokens:
        path = self.store.token_file(account.record)
        try:
            stat = path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
            if account.cached is not None and account.cached[0] == key:
                return account.cached[1]
            tokens = self.store.load_tokens(account.record)
        except (OSError, ValueError, StoreError, CodexFileError) as error:
            message = str(error) if isinstance(error, StoreError | CodexFileError) else type(error).__name__
            raise AccountUnavailable(f"account {account.name}: cannot read its login ({message})") from None
        account.cached = (key, tokens)
        return tokens

    def refresh_due(self, tokens: Tokens) -> bool:
        now = self.clock()
        expiry = tokens.expiry()
        if expiry is None:
            return tokens.last_refresh is None or now - tokens.last_refresh >= REFRESH_AGE_WITHOUT_EXPIRY
        issued = tokens.identity.issued_at or tokens.last_refresh
        lead = self.refresh_lead if issued is None else min(self.refresh_lead, (expiry - issued) / 2)
        return now >= expiry - lead

    async def tokens_for(self, account: Account) -> Tokens:
        """Tokens fit to send, refreshed first when due."""
        tokens = self._load(account)
        if not self.refresh_due(tokens):
            return tokens
        return await self._refresh(account, stale=None)

    async def refresh_after_rejection(self, account: Account, rejected: Tokens) -> Tokens:
        """The backend refused ``rejected``'s access token: refresh once (unless done meanwhile)."""
        return await self._refresh(account, stale=rejected.access_token)

    async def _refresh(self, account: Account, *, stale: str | None) -> Tokens:
        async with account.lock, file_lock(self.store.token_file(account.record)):
            current = self._load(account)
            if stale is None and not self.refresh_due(current):
                return current  # someone refreshed while this call waited
            if stale is not None and current.access_token != stale:
                return current
            return await self._refresh_locked(account, current)

    async def _refresh_locked(self, account: Account, current: Tokens) -> Tokens:
        try:
            fresh = await refresh_tokens(self.client(), self.auth_url, current, now=self.clock())
        except RefreshRejected as rejected:
            adopted = self._adopt_newer(account, current)
            if adopted is not None:
                return adopted
            reason = f"login expired ({rejected.code}): {self._relogin_hint(account)}"
            logger.error("chatgpt account %s: %s", account.name, reason)
            self.store.mark_needs_login(account.record, reason)
            raise AccountUnavailable(f"account {account.name}: {reason}") from None
        except RefreshFailed as failed:
            expiry = current.expiry()
            if expiry is not None and expiry > self.clock():
                logger.warning(
                    "chatgpt account %s: refresh failed (%s); token still valid", account.name, failed
                )
                return current
            raise AccountUnavailable(f"account {account.name}: refresh failed ({failed})") from None
        try:
            self.store.save_tokens(account.record, fresh)
        except (OSError, CodexFileError) as error:
            # The old refresh token is dead now: keep the new ones in memory at least.
            logger.error("chatgpt account %s: cannot save refreshed tokens (%s)", account.name, error)
        account.cached = None
        logger.info("chatgpt account %s: tokens refreshed", account.name)
        return fresh

    def _adopt_newer(self, account: Account, used: Tokens) -> Tokens | None:
        """After a rejected refresh of an imported login: the Codex CLI may have refreshed it
        between our read and our refresh; its new tokens are then the ones to use."""
        if account.record.codex_file is None:
            return None
        account.cached = None
        try:
            latest = self._load(account)
        except AccountUnavailable:
            return None
        return latest if latest.refresh_token != used.refresh_token else None

    @staticmethod
    def _relogin_hint(account: Account) -> str:
        if account.record.codex_file is not None:
            return f"log in to the Codex CLI again (`codex login`) or {RELOGIN_HINT}"
        return RELOGIN_HINT
