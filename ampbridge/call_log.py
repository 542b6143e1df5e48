"""One line per model call: the routing line says what uvicorn's access line would.

``AmpFallback`` logs each model call it routes (decision, model, backend, client, status, time).
While the reply to such a call starts, ``ROUTED_CALL`` is set, and ``SkipRoutedCalls`` (which
``ampbridge serve`` puts on uvicorn's access logger) drops that request's access line: under load
the second line cost a tenth of the server's time. A host app that logs its own access lines is
not touched: the filter is only where ampbridge configures logging.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

ROUTED_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("ampbridge_routed_call", default=False)


class SkipRoutedCalls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not ROUTED_CALL.get()


class AccessLogSkippingRoutedCalls:
    """uvicorn's access logger as the server protocol of ``ampbridge serve`` holds it: for a
    routed model call the access line is not even made (making a record only for a filter to
    drop it was a few percent of a small call). Wherever else the app runs, ``SkipRoutedCalls``
    drops the line."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        if not ROUTED_CALL.get():
            self.logger.info(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)
