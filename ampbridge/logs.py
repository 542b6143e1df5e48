"""Logging for the standalone server: one format for ampbridge's, uvicorn's and websockets' lines,
on the console always and in ``logs/requests.log`` on request, as text or JSON lines.

No key may reach a log at any level. Every record that passes ampbridge's handlers is masked
first: ``?key=`` / ``?auth_token=`` query values, and the values of credential headers
(``Authorization``, ``X-Api-Key``, ``Sec-WebSocket-Protocol``, cookies...) wherever a line shows
them: the ``< Name: value`` handshake lines uvicorn's and websockets' loggers print at debug
level, and header lists or dicts printed as Python values.
"""

from __future__ import annotations

import json
import logging
import re
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

from .batched_log import LoopBatchedStreamHandler
from .call_log import SkipRoutedCalls
from .credentials import redact as redact_query

LOG_FILE = Path("logs") / "requests.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
# The loggers ampbridge's handlers serve; uvicorn.error and uvicorn.access pass through "uvicorn".
OWNED_LOGGERS = ("ampbridge", "uvicorn", "websockets")
ACCESS_LOGGER = "uvicorn.access"
_UVICORN_CHILDREN = ("uvicorn.error", ACCESS_LOGGER, "uvicorn.asgi")

_CREDENTIAL_HEADER_NAMES = (
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "sec-websocket-protocol",
    "cookie",
    "set-cookie",
)
_CREDENTIAL_HEADERS = "|".join(_CREDENTIAL_HEADER_NAMES)
# Every match of the patterns below spells one of these: the names that hold no other name.
_NAME_CORES = tuple(
    name
    for name in _CREDENTIAL_HEADER_NAMES
    if not any(other != name and other in name for other in _CREDENTIAL_HEADER_NAMES)
)
_NAME_CORE = re.compile("|".join(map(re.escape, _NAME_CORES)))
# "Authorization: Bearer ..." as a handshake line prints it: the value runs to the end of the line.
_HEADER_LINE = re.compile(rf"(?im)(?<![\w-])((?:{_CREDENTIAL_HEADERS})[ \t]*:[ \t]*)[^\r\n]+")
# ('authorization', 'Bearer ...'), (b'x-api-key', b'...'), {'Authorization': '...'}: a quoted value.
_HEADER_PAIR = re.compile(
    rf"""(?i)(b?(['"])(?:{_CREDENTIAL_HEADERS})\2\s*[,:]\s*b?)(['"])(?:\\.|(?!\3).)*\3"""
)
REDACTED = "[redacted]"


def _may_name_credential_header(text: str) -> bool:
    """False only when no credential header name can be in ``text``. ASCII text is lower-cased and
    searched for the names, an exact test there; any other text goes to the patterns, whose
    case-insensitive matching also takes a few non-ASCII letters (the Kelvin sign, a long s, a
    dotless i) for ASCII ones that ``str.lower`` keeps apart."""
    if not text.isascii():
        return True
    return _NAME_CORE.search(text.lower()) is not None


def redact(text: str) -> str:
    """``text`` with query secrets and credential header values replaced by ``[redacted]``. The
    patterns run only over text that holds what they need, so a common log line costs little."""
    if "?" in text or "&" in text:  # every masked query value follows one of them
        text = redact_query(text)
    if (":" in text or "," in text) and _may_name_credential_header(text):
        text = _HEADER_LINE.sub(rf"\1{REDACTED}", text)
        text = _HEADER_PAIR.sub(rf"\1\3{REDACTED}\3", text)
    return text


_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
    "taskName",
}


# Set on a record once it is masked, to the masked message: the filter of a second handler (or of
# the logger and its handlers) leaves the record as it is, masking again would find nothing more,
# and the text formatter takes the message from here instead of formatting it again.
_MASKED = "_ampbridge_masked"
_KNOWN_ATTRIBUTES = _STANDARD_ATTRIBUTES | {_MASKED}


def _extra_fields(record: logging.LogRecord) -> dict[str, object]:
    attributes = record.__dict__
    if attributes.keys() <= _KNOWN_ATTRIBUTES:  # the common record: nothing extra to look through
        return {}
    return {
        key: value
        for key, value in attributes.items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class RedactSecrets(logging.Filter):
    """Masks secrets in a record's message, arguments and extra string fields. uvicorn's access
    formatter reads the request path from ``record.args``, so an access line's arguments are
    redacted in place; any message whose formatted text shows a secret (in an argument, or a
    header line split between the message and its arguments) is replaced by that text, masked.
    Arguments that do not fit the message are dropped: logging would otherwise print them,
    unmasked, in its error report.
    A record is masked once, however many handlers with this filter it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _MASKED in record.__dict__:
            return True
        if isinstance(record.args, tuple) and record.name == ACCESS_LOGGER:
            record.args = tuple([redact(arg) if isinstance(arg, str) else arg for arg in record.args])
        try:
            formatted = record.getMessage()
        except (TypeError, ValueError, KeyError):
            masked = redact(f"{record.msg} (arguments that do not fit dropped)")
            record.msg, record.args = masked, ()
        else:
            masked = redact(formatted)
            if masked != formatted or not isinstance(record.msg, str) or isinstance(record.args, dict):
                record.msg, record.args = masked, ()
        if getattr(record, "color_message", None) is not None:
            delattr(record, "color_message")  # an unmasked copy; the formatters here never use it
        for key, value in _extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        setattr(record, _MASKED, masked)
        return True


def redacting_logger(name: str) -> logging.Logger:
    """The logger ``name`` with ``RedactSecrets`` as a logger-level filter: its records are masked
    where they are made, before any handler sees them, whoever configured logging. For the
    loggers ampbridge hands to libraries that print request headers at debug level (the
    WebSocket client's handshake lines carry the Amp key), when used inside another app."""
    logger = logging.getLogger(name)
    if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
        logger.addFilter(RedactSecrets())
    return logger


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, and any extra
    fields the record carries; an exception's traceback under ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextLineFormatter(logging.Formatter):
    """``FORMAT``, made for a line per request: the date and time are formatted once per second,
    and a message the redaction filter already formatted is not formatted again."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second: int | None = None
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        message = record.__dict__.get(_MASKED)
        if not isinstance(message, str) or record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = message
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {record.levelname} {record.name}: {message}"


def _formatter(log_format: str) -> logging.Formatter:
    return JsonLineFormatter() if log_format == "json" else TextLineFormatter()


_HANDLER_TAG = "_ampbridge_handler"


def configure_logging(
    *,
    level: int | str = logging.INFO,
    to_file: bool = False,
    log_format: str = "text",
    log_file: Path = LOG_FILE,
    debug: bool = False,
) -> None:
    """(Re)configure ampbridge's, uvicorn's and websockets' loggers; safe to call on every reload.
    ``debug`` (the config file's ``debug: true``) forces the DEBUG level. Handlers that uvicorn's
    own log config put on its loggers are replaced, so every line has the same format."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    resolved = (
        logging.DEBUG if debug else logging.getLevelName(level.upper()) if isinstance(level, str) else level
    )
    if not isinstance(resolved, int):
        raise ValueError(f"unknown log level {level!r}")
    handlers: list[logging.Handler] = [LoopBatchedStreamHandler()]
    if to_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            RotatingFileHandler(log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8")
        )
    redaction = RedactSecrets()
    for handler in handlers:
        setattr(handler, _HANDLER_TAG, True)
        handler.setFormatter(_formatter(log_format))
        handler.addFilter(redaction)
    for name in OWNED_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            if getattr(handler, _HANDLER_TAG, False):
                handler.close()
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(resolved)
        logger.propagate = False
    for name in _UVICORN_CHILDREN:  # uvicorn's config gives these their own handlers and levels
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    access = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, SkipRoutedCalls) for existing in access.filters):
        access.addFilter(SkipRoutedCalls())  # a routed model call's own line says it all
