"""Find a model call's top-level ``"model"`` without building the JSON tree.

Routing needs one string out of a body that may be 64 MiB of conversation. ``json.loads`` builds
every nested object first: an adversarial ``{"x": [{}, {}, ...]}`` takes tens of bytes of memory
per body byte and seconds of CPU. This scanner walks the top-level object only, jumps over nested
values with C-speed primitives (``re`` for runs of strings, ``bytes.count`` and a halving search
for runs of brackets), decodes only the top-level keys that could be ``"model"`` and that key's
value, and never recurses: memory stays a small multiple of the body, time linear in it.

It answers like ``json.loads(body).get("model")`` would for a valid JSON object (the last
``"model"`` key wins, a non-string value means no model), and says whether the body looked like
a JSON object at all, so the caller can tell an odd body from a body without a model. It also
records where the values of the top-level members the local fixes need (``WATCHED_MEMBERS``)
start and end, so a forwarded or lightly changed body never has to be parsed whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import anyio.to_thread

THREAD_THRESHOLD = 1 << 20  # bodies larger than this are scanned in a worker thread
MAX_MODEL_BYTES = 4096  # a longer "model" value is no model name
# One regex call holds the GIL: each covers at most this much, so the event loop gets turns.
_CHUNK = 1 << 16
# ``find`` (memory speed) searches this far at a time: a long string costs few Python steps.
_FIND_WINDOW = 1 << 20
_SHORT_RUN = 16  # runs of backslashes up to this long are counted byte by byte
_ESCAPED_WINDOW = 1 << 16  # how far the regex walks a string past an escaped quote
# Top-level members whose value spans are recorded: the model, and what the local fixes read.
WATCHED_MEMBERS = frozenset({"model", "tools", "messages"})
_MAX_KEY_BYTES = 6 * max(map(len, WATCHED_MEMBERS))  # a watched key with every letter escaped

_WS = rb"[ \t\n\r]*+"
_STRING = rb'"(?:[^"\\]++|\\.)*+"'
_SCALAR_TEXT = rb"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?|true|false|null"
_FLAT = rb'(?:[^"{}\[\]]++|' + _STRING + rb")*+"  # inside a container that holds no container
_FLAT_CONTAINER = rb"\{" + _FLAT + rb"\}|\[" + _FLAT + rb"\]"

_WHITESPACE = re.compile(_WS)
_STRING_CONTENT = re.compile(rb'(?:[^"\\]++|\\.)*+', re.DOTALL)  # from after an opening quote
_SCALAR = re.compile(_SCALAR_TEXT)
# Inside a nested value: everything up to the next bracket of a container that holds containers.
_NESTED_RUN = re.compile(rb'(?:[^"{}\[\]]++|' + _STRING + b"|" + _FLAT_CONTAINER + rb")*+", re.DOTALL)
_FLAT_CONTAINER_AT = re.compile(_FLAT_CONTAINER, re.DOTALL)
_BRACKET_RUN = re.compile(rb"[\[\]{},: \t\n\r]*+")
# Top-level members that are not watched (a plain key other than those) with a simple value.
_PLAIN_MEMBERS = re.compile(
    rb'(?:"(?!(?:'
    + b"|".join(name.encode() for name in sorted(WATCHED_MEMBERS))
    + rb')")[^"\\]*+"'
    + _WS
    + b":"
    + _WS
    + rb"(?:"
    + _STRING
    + b"|"
    + _SCALAR_TEXT
    + b"|"
    + _FLAT_CONTAINER
    + rb")"
    + _WS
    + b","
    + _WS
    + rb")*+",
    re.DOTALL,
)


@dataclass(frozen=True)
class ModelScan:
    is_object: bool  # the body is a JSON object, as far as the scan looked
    model: str | None  # its top-level "model", when that is a string
    # (key, value start, value end) of every top-level watched member, in body order
    members: tuple[tuple[str, int, int], ...] = field(default=(), compare=False)

    def span(self, key: str) -> tuple[int, int] | None:
        """Where the value of the last top-level ``key`` (the one ``json`` keeps) lies."""
        for name, start, end in reversed(self.members):
            if name == key:
                return start, end
        return None

    def count(self, key: str) -> int:
        """How many times ``key`` is a top-level member."""
        return sum(1 for name, _, _ in self.members if name == key)


ODD_BODY = ModelScan(is_object=False, model=None)


class _Malformed(Exception):
    pass


def scan_model(body: bytes) -> ModelScan:
    """The top-level ``"model"`` string of the JSON object ``body``, in one linear pass."""
    try:
        return _Scanner(body).scan()
    except _Malformed:
        return ODD_BODY


async def scan_model_async(body: bytes, *, thread_threshold: int = THREAD_THRESHOLD) -> ModelScan:
    """``scan_model``, in a worker thread for large bodies so the event loop keeps serving."""
    if len(body) <= thread_threshold:
        return scan_model(body)
    return await anyio.to_thread.run_sync(scan_model, body)


class _Scanner:
    """One pass over ``body``; ``pos`` only moves forward."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.pos = 0

    def scan(self) -> ModelScan:
        model: str | None = None
        members: list[tuple[str, int, int]] = []
        if self._next_char() != b"{":
            raise _Malformed
        self.pos += 1
        separator = self._next_char()
        if separator == b"}":
            self.pos += 1
        while separator != b"}":
            self._skip(_PLAIN_MEMBERS)
            if self._next_char() != b'"':
                raise _Malformed
            key = self._watched_key()
            if self._next_char() != b":":
                raise _Malformed
            self.pos += 1
            start = self._next_char()
            value_start = self.pos
            if key == "model" and start == b'"':
                model = self._model_value()
            else:
                model = None if key == "model" else model
                self._skip_value(start)
            if key is not None:
                members.append((key, value_start, self.pos))
            separator = self._next_char()
            if separator not in (b",", b"}"):
                raise _Malformed
            self.pos += 1
        if self._next_char() != b"":
            raise _Malformed
        return ModelScan(is_object=True, model=model, members=tuple(members))

    def _next_char(self) -> bytes:
        """Skips whitespace; the byte there, or ``b""`` at the end."""
        self.pos = _WHITESPACE.match(self.body, self.pos).end()  # type: ignore[union-attr]
        return self.body[self.pos : self.pos + 1]

    def _skip(self, pattern: re.Pattern[bytes]) -> None:
        """Moves past what ``pattern`` matches here, one chunk per regex call."""
        while True:
            limit = self.pos + _CHUNK
            end = pattern.match(self.body, self.pos, limit).end()  # type: ignore[union-attr]
            self.pos = end
            if end < limit or end >= len(self.body):
                return

    def _string_end(self, quote: int) -> int:
        """Where the string opened at ``quote`` ends (just after its closing quote).

        ``find`` jumps to the next quote at memory speed, at most ``_FIND_WINDOW`` at a time;
        a quote is escaped when an odd run of backslashes precedes it. ``position`` is never
        the byte after an escape's backslash, so such a run is counted from there at most.
        After an escaped quote (or a run too long to count) the regex takes a window, so a
        string of many escaped quotes is walked at C speed too, in linear time."""
        body, position = self.body, quote + 1
        while True:
            limit = position + _FIND_WINDOW
            end = body.find(b'"', position, limit)
            if end < 0:
                if limit >= len(body):
                    raise _Malformed
                position = self._unescaped_from(position, limit)
                continue
            run = self._backslashes_before(position, end)
            if run is not None and run % 2 == 0:
                return end + 1
            # An escaped quote, or a run too long to count: escapes are about, the regex walks on.
            position = _STRING_CONTENT.match(body, position, end + _ESCAPED_WINDOW).end()  # type: ignore[union-attr]
            if body[position : position + 1] == b'"':
                return position + 1

    def _backslashes_before(self, position: int, end: int) -> int | None:
        """How many backslashes ``body[position:end]`` ends with; None when over ``_SHORT_RUN``."""
        body, index = self.body, end - 1
        while index >= position and body[index] == 0x5C:
            if end - index > _SHORT_RUN:
                return None
            index -= 1
        return end - 1 - index

    def _unescaped_from(self, position: int, limit: int) -> int:
        """A place at or just after ``limit`` that is not an escaped byte, to search on from."""
        run = self._backslashes_before(position, limit)
        if run is None:
            return _STRING_CONTENT.match(self.body, position, limit).end()  # type: ignore[union-attr]
        return limit + run % 2

    def _decode(self, start: int, end: int) -> str:
        try:
            text = json.loads(self.body[start:end])
        except ValueError as error:  # bad escapes, control characters, invalid UTF-8
            raise _Malformed from error
        assert isinstance(text, str)
        return text

    def _watched_key(self) -> str | None:
        """The key here, when it is one of ``WATCHED_MEMBERS``."""
        start, self.pos = self.pos, self._string_end(self.pos)
        if self.pos - start - 2 > _MAX_KEY_BYTES:
            return None
        key = self._decode(start, self.pos)
        return key if key in WATCHED_MEMBERS else None

    def _model_value(self) -> str | None:
        start, self.pos = self.pos, self._string_end(self.pos)
        return None if self.pos - start - 2 > MAX_MODEL_BYTES else self._decode(start, self.pos)

    def _skip_value(self, start: bytes) -> None:
        if start == b'"':
            self.pos = self._string_end(self.pos)
        elif start in (b"{", b"["):
            self._skip_nested()
        else:
            scalar = _SCALAR.match(self.body, self.pos)
            if scalar is None:
                raise _Malformed
            self.pos = scalar.end()

    def _net_depth(self, start: int, end: int) -> int:
        body = self.body
        return (
            body.count(b"{", start, end)
            + body.count(b"[", start, end)
            - body.count(b"}", start, end)
            - body.count(b"]", start, end)
        )

    def _skip_nested(self) -> None:
        """From an opening bracket to just after its closing one, without recursion.

        One regex skips strings, scalars and containers that hold no container; a run of bare
        brackets is counted, not walked. In JSON, once the value has closed, no bracket can
        open again before the next key's quote, so a run holding the closing bracket is halved
        until it is found."""
        body = self.body
        flat = _FLAT_CONTAINER_AT.match(body, self.pos, self.pos + _CHUNK)
        if flat is not None:
            self.pos = flat.end()
            return
        depth = 0
        while True:
            self._skip(_NESTED_RUN)
            if body[self.pos : self.pos + 1] == b'"':  # a string the last chunk cut
                self.pos = self._string_end(self.pos)
                continue
            start = self.pos
            self._skip(_BRACKET_RUN)
            end = self.pos
            if end == start:  # a stray byte, or the end of the body
                raise _Malformed
            if end - start > 1 and body[end - 1] in b"{[":
                end -= 1  # the last opener may open a flat container: leave it to the regex
            net = self._net_depth(start, end)
            if depth + net > 0:
                depth, self.pos = depth + net, end
                continue
            low, high = start, end  # depth after body[:low] is > 0, or low is the start
            while high - low > 1:
                middle = (low + high) // 2
                middle_depth = depth + self._net_depth(low, middle)
                if middle_depth > 0:
                    low, depth = middle, middle_depth
                else:
                    high = middle
            self.pos = high
            return
