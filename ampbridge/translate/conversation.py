"""The neutral form of a model request: what every dialect's request is read into and written from.

Only what has a meaning in more than one dialect is kept; dialect-only fields (cache hints,
metadata, store flags) are dropped on the way through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ampbridge.translate.effort import Effort


@dataclass
class Text:
    text: str


@dataclass
class Image:
    media_type: str
    data: str = ""  # base64, when the image is inline
    url: str = ""  # when the image is given by address


@dataclass
class Thinking:
    text: str
    signature: str = ""  # opaque; only the dialect that made it can read it back


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as text


@dataclass
class ToolResult:
    call_id: str
    content: list[Text | Image]
    is_error: bool = False
    name: str = ""  # filled from the matching call when the dialect does not carry it


Part = Text | Image | Thinking | ToolCall | ToolResult


@dataclass
class Message:
    role: Literal["user", "assistant"]
    parts: list[Part]


@dataclass
class Tool:
    name: str
    description: str
    schema: dict[str, Any]  # JSON Schema of the arguments (an object)


@dataclass
class ToolChoice:
    mode: Literal["auto", "any", "none", "tool"]
    name: str = ""  # for mode "tool"


@dataclass
class Conversation:
    system: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    effort: Effort | None = None


def sampling(
    conversation: Conversation,
    *,
    max_tokens: str | None,
    temperature: str = "temperature",
    top_p: str = "top_p",
) -> dict[str, Any]:
    """The sampling settings that are set, under the target's own names (``max_tokens`` None:
    the target writes its token limit itself)."""
    named = [(temperature, conversation.temperature), (top_p, conversation.top_p)]
    if max_tokens is not None:
        named.insert(0, (max_tokens, conversation.max_tokens))
    return {key: value for key, value in named if value is not None}


def text_of(parts: list[Text | Image]) -> str:
    """The text of a tool result's parts, for dialects whose tool results are plain strings."""
    return "\n".join(p.text for p in parts if isinstance(p, Text))


def name_tool_results(conversation: Conversation) -> None:
    """Give every tool result the name of the call it answers (Gemini pairs results by name)."""
    names: dict[str, str] = {}
    for message in conversation.messages:
        for part in message.parts:
            if isinstance(part, ToolCall):
                names[part.id] = part.name
            elif isinstance(part, ToolResult) and not part.name:
                part.name = names.get(part.call_id, part.call_id)


def image_from_url(url: str) -> Image:
    """An image given as ``data:<type>;base64,<data>`` or as an ordinary address."""
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return Image(media_type=head or "image/png", data=data)
    return Image(media_type="", url=url)


def image_as_url(image: Image) -> str:
    return image.url or f"data:{image.media_type};base64,{image.data}"


def merge_roles(messages: list[Message]) -> list[Message]:
    """Joins neighbouring messages of one role and drops empty ones (strict dialects want turns to
    alternate)."""
    merged: list[Message] = []
    for message in messages:
        if not message.parts:
            continue
        if merged and merged[-1].role == message.role:
            merged[-1] = Message(message.role, [*merged[-1].parts, *message.parts])
        else:
            merged.append(Message(message.role, list(message.parts)))
    return merged


def error_text(result: ToolResult) -> str:
    """A tool result's text, marked as an error for dialects without an error flag."""
    text = text_of(result.content)
    return f"Error: {text}" if result.is_error and not text.startswith("Error") else text
