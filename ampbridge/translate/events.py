"""The neutral form of a model reply: a short list of events every dialect's reply is read into,
and the whole reply they add up to (for clients that asked for JSON).

A backend's stream is decoded into these events as each backend event arrives, and the client's
encoder writes each one out at once, so translation never holds the stream back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from ampbridge.translate.conversation import Text, Thinking, ToolCall

# Stop reasons use Anthropic's names: end_turn, max_tokens, tool_use, stop_sequence, refusal.


@dataclass
class Usage:
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0  # reasoning tokens included
    cached_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass
class Start:
    id: str = ""


@dataclass
class TextDelta:
    text: str


@dataclass
class ThinkingDelta:
    text: str


@dataclass
class ThinkingSignature:
    signature: str


@dataclass
class ToolStart:
    key: str  # the backend's handle for this call in the stream (an index or item id)
    id: str
    name: str


@dataclass
class ToolArgs:
    key: str
    fragment: str


@dataclass
class Finish:
    reason: str
    usage: Usage


@dataclass
class Failure:
    message: str
    kind: str = "api_error"  # an Anthropic error type


Event = Start | TextDelta | ThinkingDelta | ThinkingSignature | ToolStart | ToolArgs | Finish | Failure


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


@dataclass
class Reply:
    """A whole reply, added up from events."""

    id: str = ""
    parts: list[Text | Thinking | ToolCall] = field(default_factory=list)
    reason: str = "end_turn"
    usage: Usage = field(default_factory=Usage)
    failure: Failure | None = None
    _calls: dict[str, ToolCall] = field(default_factory=dict)

    def add(self, event: Event) -> None:
        last = self.parts[-1] if self.parts else None
        if isinstance(event, Start):
            self.id = event.id
        elif isinstance(event, TextDelta):
            if isinstance(last, Text):
                last.text += event.text
            else:
                self.parts.append(Text(event.text))
        elif isinstance(event, ThinkingDelta):
            if isinstance(last, Thinking):
                last.text += event.text
            else:
                self.parts.append(Thinking(event.text))
        elif isinstance(event, ThinkingSignature):
            if isinstance(last, Thinking):
                last.signature += event.signature
        elif isinstance(event, ToolStart):
            call = ToolCall(event.id, event.name, "")
            self._calls[event.key] = call
            self.parts.append(call)
        elif isinstance(event, ToolArgs):
            if event.key in self._calls:
                self._calls[event.key].arguments += event.fragment
        elif isinstance(event, Finish):
            self.reason, self.usage = event.reason, event.usage
        else:
            self.failure = event


def tool_calls_reason(reason: str, saw_tool_call: bool) -> str:
    """Dialects without a tool-use stop reason end a tool-calling turn with a plain stop."""
    return "tool_use" if saw_tool_call and reason == "end_turn" else reason
