"""OpenAI Responses requests to and from the neutral :class:`Conversation`."""

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


def _parts(content: Any) -> list[Text | Image]:
    if isinstance(content, str):
        return [Text(content)]
    parts: list[Text | Image] = []
    for item in content or []:
        kind = item.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append(Text(item.get("text", "")))
        elif kind == "refusal":
            parts.append(Text(item.get("refusal", "")))
        elif kind == "input_image" and item.get("image_url"):
            parts.append(image_from_url(item["image_url"]))
    return parts


def _tool_choice(choice: Any) -> ToolChoice | None:
    if isinstance(choice, dict):
        return ToolChoice("tool", choice.get("name", "")) if choice.get("type") == "function" else None
    return {"auto": ToolChoice("auto"), "none": ToolChoice("none"), "required": ToolChoice("any")}.get(
        str(choice)
    )


def _append(conversation: Conversation, role: str, part: Part) -> None:
    if conversation.messages and conversation.messages[-1].role == role:
        conversation.messages[-1].parts.append(part)
    else:
        conversation.messages.append(Message("assistant" if role == "assistant" else "user", [part]))


def parse(body: dict[str, Any]) -> Conversation:
    reasoning = body.get("reasoning") or {}
    conversation = Conversation(
        system=[body["instructions"]] if body.get("instructions") else [],
        max_tokens=body.get("max_output_tokens"),
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        effort=Effort.from_level(reasoning["effort"]) if reasoning.get("effort") else None,
        tool_choice=_tool_choice(body.get("tool_choice")) if "tool_choice" in body else None,
        parallel_tool_calls=body.get("parallel_tool_calls"),
    )
    items = body.get("input")
    for item in [{"role": "user", "content": items}] if isinstance(items, str) else items or []:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                conversation.system.append(
                    "".join(p.text for p in _parts(item.get("content")) if isinstance(p, Text))
                )
            else:
                for part in _parts(item.get("content")):
                    _append(conversation, "assistant" if role == "assistant" else "user", part)
        elif kind == "function_call":
            call = ToolCall(item.get("call_id", ""), item.get("name", ""), item.get("arguments") or "{}")
            _append(conversation, "assistant", call)
        elif kind == "function_call_output":
            _append(conversation, "user", ToolResult(item.get("call_id", ""), _parts(item.get("output"))))
        elif kind == "reasoning":
            summary = "".join(s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict))
            _append(conversation, "assistant", Thinking(summary, item.get("encrypted_content") or ""))
    for tool in body.get("tools") or []:
        if tool.get("type") == "function":
            schema = object_schema(tool.get("parameters"))
            conversation.tools.append(Tool(tool.get("name", ""), tool.get("description", ""), schema))
    return conversation


def _message_item(role: str, part: Text | Image) -> dict[str, Any]:
    if isinstance(part, Image):
        return {"type": "input_image", "image_url": image_as_url(part)}
    return {"type": "output_text" if role == "assistant" else "input_text", "text": part.text}


def _input(conversation: Conversation) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in merge_roles(conversation.messages):
        for part in message.parts:
            if isinstance(part, Text) or (isinstance(part, Image) and message.role == "user"):
                last = items[-1] if items else None
                content = _message_item(message.role, part)
                if last and last.get("type") == "message" and last["role"] == message.role:
                    last["content"].append(content)
                else:
                    items.append({"type": "message", "role": message.role, "content": [content]})
            elif isinstance(part, ToolCall):
                call = {"type": "function_call", "call_id": part.id, "name": part.name}
                items.append({**call, "arguments": part.arguments})
            elif isinstance(part, ToolResult):
                output = {"type": "function_call_output", "call_id": part.call_id}
                items.append({**output, "output": error_text(part)})
    return items


def build(conversation: Conversation, model: str, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": _input(conversation), "store": False}
    system = "\n\n".join(text for text in conversation.system if text)
    if system:
        body["instructions"] = system
    if conversation.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                "description": t.description,
                "parameters": t.schema,
                "strict": False,
            }
            for t in conversation.tools
        ]
        choice = conversation.tool_choice
        if choice:
            body["tool_choice"] = (
                {"type": "function", "name": choice.name}
                if choice.mode == "tool"
                else "required"
                if choice.mode == "any"
                else choice.mode
            )
        if conversation.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = conversation.parallel_tool_calls
    body.update(sampling(conversation, max_tokens="max_output_tokens"))
    if conversation.effort:
        body["reasoning"] = {"effort": conversation.effort.level, "summary": "auto"}
        if not conversation.effort.enabled:
            body["reasoning"] = {"effort": "none"}
    if stream:
        body["stream"] = True
    return body
