"""Anthropic Messages requests to and from the neutral :class:`Conversation`."""

from __future__ import annotations

import json
from typing import Any, Literal

from ampbridge.translate.conversation import (
    Conversation,
    Image,
    Message,
    Part,
    Text,
    Thinking,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    merge_roles,
    sampling,
)
from ampbridge.translate.effort import Effort
from ampbridge.translate.schema import object_schema

DEFAULT_MAX_TOKENS = 8192
MIN_THINKING_BUDGET = 1024


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content or [] if isinstance(block, dict)]


def _image(block: dict[str, Any]) -> Image:
    source = block.get("source") or {}
    if source.get("type") == "url":
        return Image(media_type="", url=source.get("url", ""))
    return Image(media_type=source.get("media_type", "image/png"), data=source.get("data", ""))


def _result_content(content: Any) -> list[Text | Image]:
    parts: list[Text | Image] = []
    for block in _blocks(content):
        if block.get("type") == "text":
            parts.append(Text(block.get("text", "")))
        elif block.get("type") == "image":
            parts.append(_image(block))
    return parts


def _part(block: dict[str, Any]) -> Part | None:
    kind = block.get("type")
    if kind == "text":
        return Text(block.get("text", ""))
    if kind == "image":
        return _image(block)
    if kind == "thinking":
        return Thinking(block.get("thinking", ""), block.get("signature", ""))
    if kind == "tool_use":
        return ToolCall(block.get("id", ""), block.get("name", ""), json.dumps(block.get("input") or {}))
    if kind == "tool_result":
        return ToolResult(
            block.get("tool_use_id", ""), _result_content(block.get("content")), bool(block.get("is_error"))
        )
    return None  # redacted thinking, documents, server tool blocks: nothing other dialects can take


def _effort(body: dict[str, Any]) -> Effort | None:
    thinking = body.get("thinking") or {}
    kind = thinking.get("type")
    if kind == "enabled":
        return Effort.from_budget(int(thinking.get("budget_tokens") or MIN_THINKING_BUDGET))
    if kind == "disabled":
        return Effort.from_level("none")
    if kind == "adaptive":
        return Effort.from_level(str((body.get("output_config") or {}).get("effort") or "high"))
    return None


def _tool_choice(choice: Any) -> ToolChoice | None:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "tool":
        return ToolChoice("tool", choice.get("name", ""))
    return ToolChoice(kind) if kind in ("auto", "any", "none") else None


def parse(body: dict[str, Any]) -> Conversation:
    system = body.get("system")
    conversation = Conversation(
        system=[b.get("text", "") for b in _blocks(system) if b.get("type") == "text"] if system else [],
        max_tokens=body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=list(body.get("stop_sequences") or []),
        effort=_effort(body),
        tool_choice=_tool_choice(body.get("tool_choice")),
    )
    if isinstance(body.get("tool_choice"), dict) and body["tool_choice"].get("disable_parallel_tool_use"):
        conversation.parallel_tool_calls = False
    for message in body.get("messages") or []:
        role: Literal["user", "assistant"] = "assistant" if message.get("role") == "assistant" else "user"
        parts = [p for p in map(_part, _blocks(message.get("content"))) if p is not None]
        conversation.messages.append(Message(role, parts))
    for tool in body.get("tools") or []:
        if "input_schema" in tool or not tool.get("type") or tool.get("type") == "custom":
            schema = object_schema(tool.get("input_schema"))
            conversation.tools.append(Tool(tool.get("name", ""), tool.get("description", ""), schema))
    return conversation


def _image_block(image: Image) -> dict[str, Any]:
    if image.url:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": image.media_type, "data": image.data}}


def _block(part: Part) -> dict[str, Any] | None:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, Image):
        return _image_block(part)
    if isinstance(part, Thinking):
        # A signature from another dialect cannot be checked by Anthropic: such thinking is dropped.
        return (
            {"type": "thinking", "thinking": part.text, "signature": part.signature}
            if part.signature
            else None
        )
    if isinstance(part, ToolCall):
        return {"type": "tool_use", "id": part.id, "name": part.name, "input": _arguments(part.arguments)}
    content = [b for b in map(_block, part.content) if b is not None]
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.call_id, "content": content}
    if part.is_error:
        result["is_error"] = True
    return result


def _arguments(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _thinking_allowed(conversation: Conversation, messages: list[dict[str, Any]]) -> bool:
    """Anthropic refuses thinking with a forced tool, or when the last assistant turn called a tool
    without a (signed) thinking block before it."""
    if conversation.tool_choice and conversation.tool_choice.mode in ("any", "tool"):
        return False
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    if last is None or not any(b["type"] == "tool_use" for b in last["content"]):
        return True
    return bool(last["content"][0]["type"] == "thinking")


def build(conversation: Conversation, model: str, stream: bool) -> dict[str, Any]:
    messages = []
    for message in merge_roles(conversation.messages):
        content = [b for b in map(_block, message.parts) if b is not None]
        if message.role == "user":  # tool results must come first in their turn
            content.sort(key=lambda b: b["type"] != "tool_result")
        if content:
            messages.append({"role": message.role, "content": content})
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": conversation.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if conversation.system:
        body["system"] = [{"type": "text", "text": text} for text in conversation.system if text]
    if conversation.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.schema}
            for t in conversation.tools
        ]
    choice = conversation.tool_choice
    if choice or (conversation.parallel_tool_calls is False and conversation.tools):
        tool_choice: dict[str, Any] = {"type": choice.mode if choice else "auto"}
        if choice and choice.mode == "tool":
            tool_choice["name"] = choice.name
        if conversation.parallel_tool_calls is False and tool_choice["type"] != "none":
            tool_choice["disable_parallel_tool_use"] = True
        body["tool_choice"] = tool_choice
    body.update(sampling(conversation, max_tokens=None))
    if conversation.stop:
        body["stop_sequences"] = conversation.stop
    effort = conversation.effort
    if effort and effort.enabled and _thinking_allowed(conversation, messages):
        budget = max(MIN_THINKING_BUDGET, effort.budget)
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        if body["max_tokens"] <= budget:
            body["max_tokens"] = budget + DEFAULT_MAX_TOKENS
        body.pop("temperature", None)  # thinking takes only the default sampling
        body.pop("top_p", None)
    if stream:
        body["stream"] = True
    return body
