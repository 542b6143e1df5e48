"""Gemini generateContent requests to and from the neutral :class:`Conversation`.

Gemini pairs a function's response with its call by name (ids are optional), so calls without an
id get one here, and responses take the id of the oldest unanswered call of that name.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
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
    name_tool_results,
    sampling,
    text_of,
)
from ampbridge.translate.effort import Effort
from ampbridge.translate.schema import from_gemini, object_schema, to_gemini

# Gemini 3 checks that a replayed function call carries the thought signature it was given; calls
# that come from another dialect have none, and this documented value tells Gemini to skip the check.
SKIP_SIGNATURE = "skip_thought_signature_validator"


def _system(instruction: Any) -> list[str]:
    if isinstance(instruction, str):
        return [instruction]
    parts = (instruction or {}).get("parts") or []
    return [p["text"] for p in parts if isinstance(p, dict) and p.get("text")]


def _effort(config: dict[str, Any]) -> Effort | None:
    thinking = config.get("thinkingConfig") or {}
    if thinking.get("thinkingLevel"):
        return Effort.from_level(str(thinking["thinkingLevel"]))
    budget = thinking.get("thinkingBudget")
    if isinstance(budget, int):
        return Effort.from_level("medium") if budget < 0 else Effort.from_budget(budget)
    return None


def _tool_choice(tool_config: Any) -> ToolChoice | None:
    config = (tool_config or {}).get("functionCallingConfig") or {}
    mode = str(config.get("mode", "")).upper()
    allowed = config.get("allowedFunctionNames") or []
    if mode == "ANY" and len(allowed) == 1:
        return ToolChoice("tool", allowed[0])
    return {"AUTO": ToolChoice("auto"), "ANY": ToolChoice("any"), "NONE": ToolChoice("none")}.get(mode)


def _response_parts(response: Any) -> tuple[list[Text | Image], bool]:
    if isinstance(response, dict) and set(response) <= {"output", "content", "error", "name"}:
        for key in ("error", "output", "content"):
            if key in response:
                value = response[key]
                return [Text(value if isinstance(value, str) else json.dumps(value))], key == "error"
    return [Text(json.dumps(response))], False


def parse(body: dict[str, Any]) -> Conversation:
    config = body.get("generationConfig") or {}
    conversation = Conversation(
        system=_system(body.get("systemInstruction")),
        max_tokens=config.get("maxOutputTokens"),
        temperature=config.get("temperature"),
        top_p=config.get("topP"),
        stop=list(config.get("stopSequences") or []),
        effort=_effort(config),
        tool_choice=_tool_choice(body.get("toolConfig")),
    )
    unanswered: dict[str, deque[str]] = defaultdict(deque)
    count = 0
    for content in body.get("contents") or []:
        role: Literal["user", "assistant"] = "assistant" if content.get("role") == "model" else "user"
        parts: list[Part] = []
        for part in content.get("parts") or []:
            if "functionCall" in part:
                call = part["functionCall"]
                count += 1
                call_id = call.get("id") or f"call_{count}_{call.get('name', '')}"
                unanswered[call.get("name", "")].append(call_id)
                parts.append(ToolCall(call_id, call.get("name", ""), json.dumps(call.get("args") or {})))
            elif "functionResponse" in part:
                response = part["functionResponse"]
                name = response.get("name", "")
                waiting = unanswered[name]
                call_id = response.get("id") or (waiting[0] if waiting else f"call_{name}")
                if call_id in waiting:
                    waiting.remove(call_id)
                result_parts, is_error = _response_parts(response.get("response"))
                parts.append(ToolResult(call_id, result_parts, is_error, name))
            elif "inlineData" in part:
                data = part["inlineData"]
                parts.append(Image(data.get("mimeType", "image/png"), data=data.get("data", "")))
            elif "fileData" in part:
                data = part["fileData"]
                parts.append(Image(data.get("mimeType", ""), url=data.get("fileUri", "")))
            elif part.get("thought"):
                parts.append(Thinking(part.get("text", ""), part.get("thoughtSignature", "")))
            elif "text" in part:
                parts.append(Text(part["text"]))
        conversation.messages.append(Message(role, parts))
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
            schema = declaration.get("parametersJsonSchema") or from_gemini(declaration.get("parameters"))
            conversation.tools.append(
                Tool(declaration.get("name", ""), declaration.get("description", ""), object_schema(schema))
            )
    return conversation


def _gemini_part(part: Part) -> dict[str, Any] | None:
    if isinstance(part, Text):
        return {"text": part.text} if part.text else None
    if isinstance(part, Image):
        if part.url:
            return {"fileData": {"mimeType": part.media_type or "image/png", "fileUri": part.url}}
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    if isinstance(part, ToolCall):
        try:
            args = json.loads(part.arguments or "{}")
        except ValueError:
            args = {}
        return {"functionCall": {"name": part.name, "args": args}, "thoughtSignature": SKIP_SIGNATURE}
    if isinstance(part, ToolResult):
        key = "error" if part.is_error else "output"
        return {"functionResponse": {"name": part.name, "response": {key: text_of(part.content)}}}
    return None  # thinking from another dialect cannot be replayed to Gemini


def _thinking_config(effort: Effort, model: str) -> dict[str, Any]:
    if not effort.enabled:
        return {"thinkingBudget": 0}
    if model.startswith("gemini-2"):  # 2.x models take a budget; later ones a level
        return {"thinkingBudget": effort.budget, "includeThoughts": True}
    level = {"none": "low", "minimal": "low", "xhigh": "high"}.get(effort.level, effort.level)
    return {"thinkingLevel": level, "includeThoughts": True}


def build(conversation: Conversation, model: str, stream: bool) -> dict[str, Any]:
    name_tool_results(conversation)
    contents = []
    for message in merge_roles(conversation.messages):
        parts = [p for p in map(_gemini_part, message.parts) if p is not None]
        if parts:
            contents.append({"role": "model" if message.role == "assistant" else "user", "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    system = [text for text in conversation.system if text]
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    if conversation.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {"name": t.name, "description": t.description, "parameters": to_gemini(t.schema)}
                    for t in conversation.tools
                ]
            }
        ]
        choice = conversation.tool_choice
        if choice:
            mode = {"auto": "AUTO", "any": "ANY", "none": "NONE", "tool": "ANY"}[choice.mode]
            calling: dict[str, Any] = {"mode": mode}
            if choice.mode == "tool":
                calling["allowedFunctionNames"] = [choice.name]
            body["toolConfig"] = {"functionCallingConfig": calling}
    config: dict[str, Any] = sampling(conversation, max_tokens="maxOutputTokens", top_p="topP")
    if conversation.stop:
        config["stopSequences"] = conversation.stop
    if conversation.effort:
        config["thinkingConfig"] = _thinking_config(conversation.effort, model)
    if config:
        body["generationConfig"] = config
    return body
