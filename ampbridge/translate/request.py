"""Request translation: a call's body in one dialect becomes a valid body of another."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ampbridge.translate import request_anthropic, request_chat, request_gemini, request_responses
from ampbridge.translate.conversation import Conversation
from ampbridge.translate.dialect import Dialect, target_path
from ampbridge.translate.effort import Effort, split_model_suffix

_MODULES: dict[Dialect, ModuleType] = {
    Dialect.ANTHROPIC: request_anthropic,
    Dialect.CHAT: request_chat,
    Dialect.RESPONSES: request_responses,
    Dialect.GEMINI: request_gemini,
}


@dataclass(frozen=True)
class TranslatedRequest:
    body: dict[str, Any]
    path: str  # the target's standard path; for Gemini streams with the query "alt=sse"
    stream: bool


def parse_request(body: dict[str, Any], dialect: Dialect) -> Conversation:
    parse: Callable[[dict[str, Any]], Conversation] = _MODULES[dialect].parse
    return parse(body)


def build_request(conversation: Conversation, dialect: Dialect, model: str, stream: bool) -> dict[str, Any]:
    build: Callable[[Conversation, str, bool], dict[str, Any]] = _MODULES[dialect].build
    return build(conversation, model, stream)


def _same_dialect(
    body: dict[str, Any], dialect: Dialect, model: str, effort: Effort | None
) -> dict[str, Any]:
    """Only the model name and, for a thinking suffix, the effort setting change."""
    out = copy.deepcopy(body)
    if dialect is not Dialect.GEMINI:
        out["model"] = model
    if effort is None:
        return out
    if dialect is Dialect.ANTHROPIC:
        # Rebuild the effort part through the neutral form so budget and max_tokens stay consistent.
        conversation = request_anthropic.parse(out)
        conversation.effort = effort
        rebuilt = request_anthropic.build(conversation, model, False)
        out.pop("output_config", None)
        out.pop("thinking", None)
        for key in ("thinking", "max_tokens"):
            if key in rebuilt:
                out[key] = rebuilt[key]
        for key in ("temperature", "top_p"):
            if key not in rebuilt:
                out.pop(key, None)
    elif dialect is Dialect.CHAT:
        out.pop("reasoning_effort", None)
        out.update(
            {
                k: v
                for k, v in request_chat.build(Conversation(effort=effort), model, False).items()
                if k == "reasoning_effort"
            }
        )
    elif dialect is Dialect.RESPONSES:
        out["reasoning"] = request_responses.build(Conversation(effort=effort), model, False)["reasoning"]
    else:
        config = out.setdefault("generationConfig", {})
        config["thinkingConfig"] = request_gemini.build(Conversation(effort=effort), model, False)[
            "generationConfig"
        ]["thinkingConfig"]
    return out


def translate_request(
    body: dict[str, Any], *, source: Dialect, target: Dialect, model: str, stream: bool
) -> TranslatedRequest:
    """``body`` (a request of ``source``) as a request of ``target`` for ``model``.

    ``model`` is the name to send to the backend; a thinking suffix on it (``(high)``, ``(8192)``)
    becomes the target's effort setting and is removed from the name. ``stream`` is whether the
    client asked for a stream (from the body, or for Gemini clients from the path's action).
    """
    name, effort = split_model_suffix(model)
    if source is target:
        out = _same_dialect(body, target, name, effort)
        if target is not Dialect.GEMINI:
            out["stream"] = stream
    else:
        conversation = parse_request(body, source)
        if effort is not None:
            conversation.effort = effort
        out = build_request(conversation, target, name, stream)
    return TranslatedRequest(out, target_path(target, name, stream=stream), stream)
