"""Who a ChatGPT login belongs to, read from the claims of its JWTs.

The tokens are only decoded, never verified: they come from the OAuth server over TLS and are
checked by the backend that receives them. OpenAI keeps its own claims under one namespaced key.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

OPENAI_AUTH_CLAIM = "https://api.openai.com/auth"
OPENAI_PROFILE_CLAIM = "https://api.openai.com/profile"


def jwt_payload(token: str) -> dict[str, Any]:
    """The payload of a JWT as a dict; ``{}`` for anything that is not a readable JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    segment = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        payload = json.loads(base64.urlsafe_b64decode(segment.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


@dataclass(frozen=True)
class Identity:
    """The account a login speaks for; ``expires_at``/``issued_at`` are the access token's."""

    account_id: str | None
    email: str | None
    plan: str | None
    expires_at: float | None
    issued_at: float | None


def _auth_claims(payload: dict[str, Any]) -> dict[str, Any]:
    claims = payload.get(OPENAI_AUTH_CLAIM)
    return claims if isinstance(claims, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def identity_of(id_token: str, access_token: str) -> Identity:
    """Read the account from both tokens: the id token first (CLIProxyAPI reads it there), the
    access token where the id token lacks a claim (other tools read it there; both carry it)."""
    id_claims, access_claims = jwt_payload(id_token), jwt_payload(access_token)
    id_auth, access_auth = _auth_claims(id_claims), _auth_claims(access_claims)
    profile = access_claims.get(OPENAI_PROFILE_CLAIM)
    profile_email = profile.get("email") if isinstance(profile, dict) else None
    return Identity(
        account_id=_text(id_auth.get("chatgpt_account_id")) or _text(access_auth.get("chatgpt_account_id")),
        email=_text(id_claims.get("email")) or _text(profile_email) or _text(access_claims.get("email")),
        plan=_text(id_auth.get("chatgpt_plan_type")) or _text(access_auth.get("chatgpt_plan_type")),
        expires_at=_number(access_claims.get("exp")),
        issued_at=_number(access_claims.get("iat")),
    )
