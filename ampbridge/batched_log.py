"""A console log handler that writes the lines of one turn of the event loop together.

The server logs a line per request (uvicorn's access line, or ampbridge's routing line for a model
call), and a console stream writes each line with its own system call: under load the writes
were a tenth of the server's CPU time. Here lines logged on the event loop's thread are collected and written
with one call at the end of the loop's current turn, in the order they were logged. A line
logged anywhere else (another thread, before the loop runs, at shutdown) first writes what is
pending, then itself, at once; ``flush`` and ``close`` write everything pending.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TextIO


class LoopBatchedStreamHandler(logging.StreamHandler[TextIO]):
    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self.pending: list[str] = []
        self.scheduled = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.pending.append(line)
            self.flush()
            return
        self.pending.append(line)
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        assert self.lock is not None  # made by logging.Handler.__init__ (re-entrant)
        with self.lock:
            self.scheduled = False
            text = "".join(self.pending)
            self.pending.clear()
            try:
                if text:
                    self.stream.write(text)
                self.stream.flush()
            except Exception:  # a closed or full stream must not take the server down
                self.handleError(logging.makeLogRecord({"msg": "log lines could not be written"}))

    def close(self) -> None:
        self.flush()
        super().close()
