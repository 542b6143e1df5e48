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

ROUTED_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar("ampbridge_routed_call", default=False)


class SkipRoutedCalls(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not ROUTED_CALL.get()
