"""The four wire formats ampbridge translates between, and each one's standard request path."""

from __future__ import annotations

import enum
from urllib.parse import quote


class Dialect(enum.StrEnum):
    ANTHROPIC = "anthropic"  # Messages: POST /v1/messages
    CHAT = "chat"  # OpenAI Chat Completions: POST /v1/chat/completions
    RESPONSES = "responses"  # OpenAI Responses: POST /v1/responses
    GEMINI = "gemini"  # generateContent / streamGenerateContent


def target_path(dialect: Dialect, model: str, *, stream: bool) -> str:
    """The path (and for Gemini streams the query) a backend of ``dialect`` is called on."""
    if dialect is Dialect.ANTHROPIC:
        return "/v1/messages"
    if dialect is Dialect.CHAT:
        return "/v1/chat/completions"
    if dialect is Dialect.RESPONSES:
        return "/v1/responses"
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{quote(model, safe='')}:{action}"
