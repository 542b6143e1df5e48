"""The credential store: one JSON file per ChatGPT account in a folder passed in.

A login made through ampbridge keeps its tokens in its own file. A login imported from the Codex
CLI keeps only a pointer (the path of the CLI's ``auth.json``) plus what ampbridge knows about
the account; its tokens are always read from, and written back to, the CLI's file. Either file
also records whether the account needs a new login and until when it is cooling down, so the
``ampbridge accounts`` command can show what a running server found out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .codex_file import read_codex_tokens, write_codex_tokens
from .credentials import Tokens, from_rfc3339, to_rfc3339
from .files import lock_path, read_json_object, write_private_json

FILE_TYPE = "chatgpt"
Source = Literal["ampbridge", "codex-cli"]


class StoreError(Exception):
    pass


@dataclass
class AccountRecord:
    """What the store knows about one account (never its tokens)."""

    name: str
    path: Path
    source: Source
    account_id: str | None
    email: str | None
    plan: str | None
    codex_file: Path | None = None
    needs_login: str | None = None
    cooldown_until: float | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._+-]+", "-", text).strip("-.")[:80] or "account"


def _short_hash(account_id: str) -> str:
    return hashlib.sha256(account_id.encode()).hexdigest()[:8]


class CredentialStore:
    """Reads and writes the account files under ``directory`` (created on first write, 0700)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def __repr__(self) -> str:
        return f"CredentialStore({str(self.directory)!r})"

    def records(self) -> list[AccountRecord]:
        """Every readable account file, by name; unreadable ones are skipped."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append(self._parse(path, read_json_object(path)))
            except (OSError, ValueError, StoreError):
                continue
        return found

    def find(self, wanted: str) -> AccountRecord | None:
        """An account by name, email or account id."""
        for record in self.records():
            if wanted in (record.name, record.email, record.account_id):
                return record
        return None

    def version(self) -> tuple[int, int]:
        """Changes whenever an account file is added, removed or replaced."""
        try:
            stat = self.directory.stat()
        except FileNotFoundError:
            return (0, 0)
        return (stat.st_mtime_ns, stat.st_ino)

    @staticmethod
    def _parse(path: Path, data: dict[str, Any]) -> AccountRecord:
        if data.get("type") != FILE_TYPE:
            raise StoreError(f"{path}: not a ChatGPT account file")
        source: Source = "codex-cli" if data.get("source") == "codex-cli" else "ampbridge"
        codex = data.get("codex_auth_file")
        if source == "codex-cli" and not isinstance(codex, str):
            raise StoreError(f"{path}: names no Codex CLI file")

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        return AccountRecord(
            name=path.stem,
            path=path,
            source=source,
            account_id=text("account_id"),
            email=text("email"),
            plan=text("plan"),
            codex_file=Path(codex) if isinstance(codex, str) else None,
            needs_login=text("needs_login"),
            cooldown_until=from_rfc3339(data.get("cooldown_until")),
            extra=data,
        )

    def _name_for(self, account_id: str | None, email: str | None) -> str:
        """The file name of an account: its existing one, else its email, made unique."""
        records = self.records()
        for record in records:
            if account_id and record.account_id == account_id:
                return record.name
        base = _slug(email) if email else f"account-{_short_hash(account_id or 'unknown')}"
        taken = {record.name for record in records}
        if base not in taken:
            return base
        return f"{base}-{_short_hash(account_id or base)}"

    def save_login(self, tokens: Tokens) -> AccountRecord:
        """Store a login made through ampbridge (a new account, or a new login of a known one)."""
        identity = tokens.identity
        name = self._name_for(identity.account_id, identity.email)
        data = {
            "type": FILE_TYPE,
            "source": "ampbridge",
            "account_id": identity.account_id,
            "email": identity.email,
            "plan": identity.plan,
            **_token_fields(tokens),
        }
        path = self.directory / f"{name}.json"
        write_private_json(path, data)
        return self._parse(path, data)

    def save_import(self, codex_file: Path) -> AccountRecord:
        """Record a pointer to the Codex CLI's login file (its tokens stay there)."""
        codex_file = codex_file.expanduser().resolve()
        identity = read_codex_tokens(codex_file).identity
        name = self._name_for(identity.account_id, identity.email)
        data = {
            "type": FILE_TYPE,
            "source": "codex-cli",
            "codex_auth_file": str(codex_file),
            "account_id": identity.account_id,
            "email": identity.email,
            "plan": identity.plan,
        }
        path = self.directory / f"{name}.json"
        write_private_json(path, data)
        return self._parse(path, data)

    def token_file(self, record: AccountRecord) -> Path:
        """The file that holds the account's tokens (and whose lock guards a refresh)."""
        return record.codex_file if record.codex_file is not None else record.path

    def load_tokens(self, record: AccountRecord) -> Tokens:
        if record.codex_file is not None:
            return read_codex_tokens(record.codex_file)
        data = read_json_object(record.path)
        try:
            return Tokens(
                id_token=str(data["id_token"]),
                access_token=str(data["access_token"]),
                refresh_token=str(data["refresh_token"]),
                expires_at=from_rfc3339(data.get("expires_at")),
                last_refresh=from_rfc3339(data.get("last_refresh")),
            )
        except KeyError:
            raise StoreError(f"{record.path}: holds no tokens; run `ampbridge login chatgpt`") from None

    def save_tokens(self, record: AccountRecord, tokens: Tokens) -> None:
        """Keep refreshed tokens where the account keeps them (call under ``token_file``'s lock)."""
        if record.codex_file is not None:
            write_codex_tokens(record.codex_file, tokens)
            self.update(record, needs_login=None, plan=tokens.identity.plan or record.plan)
            return
        self.update(
            record, needs_login=None, plan=tokens.identity.plan or record.plan, **_token_fields(tokens)
        )

    def update(self, record: AccountRecord, **fields: Any) -> None:
        """Change fields of an account file, keeping the others (``None`` removes a field)."""
        try:
            data = read_json_object(record.path)
        except FileNotFoundError:
            return  # logged out meanwhile
        for key, value in fields.items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        write_private_json(record.path, data)
        fresh = self._parse(record.path, data)
        record.needs_login, record.plan = fresh.needs_login, fresh.plan
        record.cooldown_until = fresh.cooldown_until

    def mark_needs_login(self, record: AccountRecord, reason: str) -> None:
        self.update(record, needs_login=reason)

    def set_cooldown(self, record: AccountRecord, until: float | None) -> None:
        self.update(record, cooldown_until=to_rfc3339(until))

    def remove(self, record: AccountRecord) -> None:
        """Forget an account (an imported login's Codex CLI file is left alone)."""
        record.path.unlink(missing_ok=True)
        lock_path(record.path).unlink(missing_ok=True)


def _token_fields(tokens: Tokens) -> dict[str, Any]:
    return {
        "id_token": tokens.id_token,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": to_rfc3339(tokens.expiry()),
        "last_refresh": to_rfc3339(tokens.last_refresh),
    }
