"""The cheap checks in front of the redaction patterns never let a secret through: over every
credential header name (in any case, and with the non-ASCII letters the patterns' case-insensitive
matching takes for ASCII ones), every masked query parameter and every shape a line shows them in,
``redact`` gives exactly what running every pattern on every line gives; and a record that passes
several handlers is masked for each of them."""

from __future__ import annotations

import io
import itertools
import logging

import pytest

from ampbridge import logs
from ampbridge.credentials import MASKED_QUERY_PARAMS
from ampbridge.credentials import redact as redact_query
from ampbridge.logs import REDACTED, RedactSecrets, redact

SECRET = "sk-live-0123456789abcdef"
HEADER_NAMES = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "sec-websocket-protocol",
    "cookie",
    "set-cookie",
)
# Letters Python's case-insensitive matching takes for ASCII ones, though str.lower() does not.
LOOKALIKES = {"k": "\u212a", "s": "\u017f", "i": "\u0131"}


def every_pattern(text: str) -> str:
    """What redaction gave before the checks: every pattern run over every line."""
    text = redact_query(text)
    text = logs._HEADER_LINE.sub(rf"\1{REDACTED}", text)
    return logs._HEADER_PAIR.sub(rf"\1\3{REDACTED}\3", text)


def spellings(name: str) -> list[str]:
    found = [name, name.upper(), name.title(), name.swapcase().title().swapcase()]
    for letter, lookalike in LOOKALIKES.items():
        if letter in name:
            found.append(name.replace(letter, lookalike, 1))
    return found


def shapes(name: str) -> list[str]:
    return [
        f"< {name}: Bearer {SECRET}",
        f"> {name}:{SECRET}",
        f"{name} :\t{SECRET}\nnext line",
        f"headers [(b'{name}', b'Bearer {SECRET}'), (b'accept', b'*/*')]",
        f"{{'{name}': '{SECRET}', 'Host': 'h'}}",
        f'{{"{name}": "{SECRET}"}}',
        f"[('{name}', '{SECRET}')]",
        f"request failed, {name}: {SECRET}",
    ]


LINES = [shape for name in HEADER_NAMES for spelling in spellings(name) for shape in shapes(spelling)]
QUERY_LINES = [
    f'127.0.0.1:5000 - "GET /v1beta/models{joiner}{param}={SECRET}&alt=sse HTTP/1.1" 200'
    for param, joiner in itertools.product(sorted(MASKED_QUERY_PARAMS), ("?", "?alt=sse&"))
] + [f"GET /x?{param.upper()}={SECRET}" for param in sorted(MASKED_QUERY_PARAMS)]
CLEAN_LINES = [
    '127.0.0.1:51234 - "POST /api/provider/anthropic/v1/messages HTTP/1.1" 200',
    "LOCAL model=claude-sonnet-4-5 resolved=claude-sonnet-4-5 provider=anthropic path=/v1/messages 1.2ms",
    "author: Ann, x-api-keyring: fine",
    "GET /v1/models?alt=sse&page=2",
    "caf\u00e9: no key here, none at all",
]


@pytest.mark.parametrize("line", LINES + QUERY_LINES + CLEAN_LINES)
def test_redact_gives_what_every_pattern_gives(line: str) -> None:
    assert redact(line) == every_pattern(line)


@pytest.mark.parametrize("line", LINES + QUERY_LINES)
def test_no_secret_shape_survives(line: str) -> None:
    assert SECRET not in redact(line)


def test_a_common_line_comes_back_as_it_was() -> None:
    for line in CLEAN_LINES:
        assert redact(line) == line


def handler(stream: io.StringIO, redaction: RedactSecrets) -> logging.Handler:
    made = logging.StreamHandler(stream)
    made.setFormatter(logging.Formatter("%(message)s %(detail)s"))
    made.addFilter(redaction)
    return made


def test_a_record_through_two_handlers_and_a_logger_filter_is_masked_for_each() -> None:
    first, second = io.StringIO(), io.StringIO()
    shared = RedactSecrets()
    logger = logging.getLogger("ampbridge.test.redaction-twice")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers[:] = [handler(first, shared), handler(second, RedactSecrets())]
    logger.filters[:] = [RedactSecrets()]
    try:
        logger.info("sent %s", f"x-api-key: {SECRET}", extra={"detail": f"GET /m?key={SECRET}"})
    finally:
        logger.handlers[:] = []
        logger.filters[:] = []
    for stream in (first, second):
        text = stream.getvalue()
        assert SECRET not in text
        assert text == f"sent x-api-key: {REDACTED} GET /m?key={REDACTED}\n"
