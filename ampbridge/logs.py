"""Logging for the standalone server: console always, ``logs/requests.log`` on request."""

from __future__ import annotations

import logging
import re
from logging.handlers import RotatingFileHandler
from pathlib import Path

LOG_FILE = Path("logs") / "requests.log"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_QUERY_SECRET = re.compile(r"([?&](?:key|auth_token)=)[^&\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    return _QUERY_SECRET.sub(r"\1[redacted]", text) if "=" in text else text


class RedactQuerySecrets(logging.Filter):
    """Masks ``?key=`` and ``?auth_token=`` values in any line. uvicorn's access formatter reads
    the request path from ``record.args``, so the arguments are redacted in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


_HANDLER_TAG = "_ampbridge_handler"


def configure_logging(*, debug: bool, to_file: bool, log_file: Path = LOG_FILE) -> None:
    """(Re)configure the ``ampbridge`` and uvicorn loggers; safe to call on every reload."""
    root = logging.getLogger("ampbridge")
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_TAG, False)]:
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if to_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(
            RotatingFileHandler(log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8")
        )
    redaction = RedactQuerySecrets()
    for handler in handlers:
        setattr(handler, _HANDLER_TAG, True)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(redaction)
        root.addHandler(handler)
    root.propagate = False
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
            logger.addFilter(redaction)
    access = logging.getLogger("uvicorn.access")
    for handler in [h for h in access.handlers if getattr(h, _HANDLER_TAG, False)]:
        access.removeHandler(handler)
    if to_file:  # the access log belongs in the request log too
        access.addHandler(handlers[-1])
