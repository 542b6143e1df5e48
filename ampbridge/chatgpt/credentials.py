"""``Tokens``: one login's OAuth tokens, kept out of every repr, log line and error message."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

from .jwt_claims import Identity, identity_of


@dataclass(frozen=True)
class Tokens:
    """The three tokens of a login and when the access token expires (unix seconds)."""

    id_token: str = field(repr=False)
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: float | None = None
    last_refresh: float | None = None

    @property
    def identity(self) -> Identity:
        return identity_of(self.id_token, self.access_token)

    def expiry(self) -> float | None:
        """The access token's expiry: its JWT ``exp``, else the one stored with it."""
        return self.identity.expires_at or self.expires_at

    def rotated(
        self,
        *,
        id_token: str | None,
        access_token: str,
        refresh_token: str | None,
        expires_in: float | None,
        now: float,
    ) -> Tokens:
        """These tokens after a refresh; a reply that omits the id or refresh token keeps the old one."""
        return replace(
            self,
            id_token=id_token or self.id_token,
            access_token=access_token,
            refresh_token=refresh_token or self.refresh_token,
            expires_at=now + expires_in if expires_in is not None else None,
            last_refresh=now,
        )


def to_rfc3339(moment: float | None) -> str | None:
    if moment is None:
        return None
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat().replace("+00:00", "Z")


def from_rfc3339(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
