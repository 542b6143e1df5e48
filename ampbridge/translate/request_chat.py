"""OpenAI Chat Completions requests to and from the neutral :class:`Conversation`."""

from __future__ import annotations

from typing import Any

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
    error_text,
    image_as_url,
    image_from_url,
    merge_roles,
    sampling,
)
from ampbridge.translate.effort import Effort
from ampbridge.translate.schema import object_schema


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and "text" in p)


def _user_parts(content: Any) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)]
    parts: list[Part] = []
    for item in content or []:
        if item.get("type") == "text":
            parts.append(Text(item.get("text", "")))
        elif item.get("type") == "image_url":
            url = item.get("image_url")
            parts.append(image_from_url(url.get("url", "") if isinstance(url, dict) else str(url)))
    return parts


def _tool_choice(choice: Any) -> ToolChoice | None:
    if isinstance(choice, dict):
        return ToolChoice("tool", (choice.get("function") or {}).get("name", ""))
    return {"auto": ToolChoice("auto"), "none": ToolChoice("none"), "required": ToolChoice("any")}.get(
        str(choice)
    )


def parse(body: dict[str, Any]) -> Conversation:
    stop = body.get("stop")
    effort = body.get("reasoning_effort")
    conversation = Conversation(
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stop=[stop] if isinstance(stop, str) else list(stop or []),
        effort=Effort.from_level(effort) if isinstance(effort, str) else None,
        tool_choice=_tool_choice(body.get("tool_choice")) if "tool_choice" in body else None,
        parallel_tool_calls=body.get("parallel_tool_calls"),
    )
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            conversation.system.append(_text(message.get("content")))
        elif role == "assistant":
            parts: list[Part] = []
            if message.get("reasoning_content"):
                parts.append(Thinking(message["reasoning_content"]))
            if _text(message.get("content")):
                parts.append(Text(_text(message.get("content"))))
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                parts.append(
                    ToolCall(call.get("id", ""), function.get("name", ""), function.get("arguments") or "{}")
                )
            conversation.messages.append(Message("assistant", parts))
        elif role == "tool":
            result = ToolResult(message.get("tool_call_id", ""), [Text(_text(message.get("content")))])
            conversation.messages.append(Message("user", [result]))
        else:
            conversation.messages.append(Message("user", _user_parts(message.get("content"))))
    for tool in body.get("tools") or []:
        if tool.get("type", "function") == "function":
            function = tool.get("function") or {}
            schema = object_schema(function.get("parameters"))
            conversation.tools.append(Tool(function.get("name", ""), function.get("description", ""), schema))
    return conversation


def _user_content(parts: list[Part]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, Text) for p in parts):
        return "\n\n".join(p.text for p in parts if isinstance(p, Text))
    content: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, Image):
            content.append({"type": "image_url", "image_url": {"url": image_as_url(part)}})
    return content


def _messages(conversation: Conversation) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    system = "\n\n".join(text for text in conversation.system if text)
    if system:
        messages.append({"role": "system", "content": system})
    for message in merge_roles(conversation.messages):
        if message.role == "assistant":
            text = "".join(p.text for p in message.parts if isinstance(p, Text))
            calls = [
                {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
                for p in message.parts
                if isinstance(p, ToolCall)
            ]
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
            continue
        rest: list[Part] = []
        for part in message.parts:
            if isinstance(part, ToolResult):  # tool messages follow the assistant's calls directly
                messages.append({"role": "tool", "tool_call_id": part.call_id, "content": error_text(part)})
                rest.extend(p for p in part.content if isinstance(p, Image))
            elif isinstance(part, Text | Image):
                rest.append(part)
        if rest:
            messages.append({"role": "user", "content": _user_content(rest)})
    return messages


def build(conversation: Conversation, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": _messages(conversation)}
    if conversation.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.schema},
            }
            for t in conversation.tools
        ]
        choice = conversation.tool_choice
        if choice:
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if choice.mode == "tool"
                else "required"
                if choice.mode == "any"
                else choice.mode
            )
        if conversation.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = conversation.parallel_tool_calls
    body.update(sampling(conversation, max_tokens="max_tokens"))
    if conversation.stop:
        body["stop"] = conversation.stop
    if conversation.effort and conversation.effort.enabled:
        body["reasoning_effort"] = (
            "high" if conversation.effort.level == "xhigh" else conversation.effort.level
        )
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body
