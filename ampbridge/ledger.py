"""The usage ledger: one SQLite row per model call, written off the request path.

A call hands its row to :meth:`UsageLedger.record`, which only appends to a bounded in-memory
queue: it never blocks, never raises, and when the queue is full it drops the row and counts it.
:meth:`UsageLedger.run` (started once by the app's supervisor) writes the queue in batches in a
worker thread, and prunes rows older than the retention period. A database that cannot be written
(full disk, read-only directory, a lock held elsewhere) is logged once; rows stay queued, writing
is retried later, and serving goes on. The file lives in the user data dir by default and is
kept across restarts (SQLite in WAL mode, so ``ampbridge usage`` can read while the server writes).
"""

from __future__ import annotations

import logging
import operator
import sqlite3
import time
from collections import deque
from dataclasses import dataclass, fields
from pathlib import Path

import anyio
import anyio.to_thread
import platformdirs

from .accounting import ReplyOutcome

logger = logging.getLogger("ampbridge.ledger")

DEFAULT_RETENTION_DAYS = 90
TABLE = "calls"


def default_ledger_path() -> Path:
    """Where the server keeps its ledger and ``ampbridge usage`` reads it by default."""
    return platformdirs.user_data_path("ampbridge") / "usage.db"


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One model call. ``client`` is a label for the caller, never a key. Token counts are
    ``None`` when the reply carried no usage (an error, an unreadable encoding, a cut stream)."""

    time: float  # Unix seconds when the call ended
    decision: str  # LOCAL, MAPPED, AMP_CREDITS or NO_PROVIDER
    client: str
    provider: str
    requested_model: str
    served_model: str
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_creation_tokens: int | None
    status: int  # 0 when no response was started
    duration_ms: float
    ttfb_ms: float | None

    @classmethod
    def of_call(
        cls,
        outcome: ReplyOutcome,
        *,
        decision: str,
        client: str,
        provider: str,
        requested_model: str,
        served_model: str,
        time: float,
    ) -> UsageRow:
        usage = outcome.usage
        return cls(
            time=time,
            decision=str(decision),
            client=client,
            provider=provider,
            requested_model=requested_model,
            served_model=served_model,
            input_tokens=usage.input_tokens if usage else None,
            output_tokens=usage.output_tokens if usage else None,
            cache_read_tokens=usage.cache_read_tokens if usage else None,
            cache_creation_tokens=usage.cache_creation_tokens if usage else None,
            status=outcome.status,
            duration_ms=outcome.duration * 1000,
            ttfb_ms=None if outcome.ttfb is None else outcome.ttfb * 1000,
        )


COLUMNS = tuple(field.name for field in fields(UsageRow))
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    decision TEXT NOT NULL,
    client TEXT NOT NULL,
    provider TEXT NOT NULL,
    requested_model TEXT NOT NULL,
    served_model TEXT NOT NULL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    cache_read_tokens INTEGER,
    cache_creation_tokens INTEGER,
    status INTEGER NOT NULL,
    duration_ms REAL NOT NULL,
    ttfb_ms REAL
);
CREATE INDEX IF NOT EXISTS {TABLE}_time ON {TABLE} (time);
"""
# A row's values in column order; ``dataclasses.astuple`` would deep-copy every field, about 40
# times slower, and the writer thread shares the event loop's core.
_ROW_VALUES = operator.attrgetter(*COLUMNS)
_INSERT = f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


class UsageLedger:
    def __init__(
        self,
        path: Path,
        *,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        capacity: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        retry_interval: float = 30.0,
        prune_interval: float = 3600.0,
        busy_timeout: float = 5.0,
    ) -> None:
        """``retention_days`` of 0 keeps rows for ever."""
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be at least 1")
        if retention_days < 0:
            raise ValueError("retention_days must not be negative")
        self.path = Path(path)
        self.retention_days = retention_days
        self.capacity = capacity
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.prune_interval = prune_interval
        self.busy_timeout = busy_timeout
        self.queue: deque[UsageRow] = deque()
        self.dropped = 0  # rows lost because the queue was full
        self.failing = False  # the last write failed; the next is tried after retry_interval
        self._drop_logged = False
        self._connection: sqlite3.Connection | None = None
        self._next_prune = 0.0

    def record(self, row: UsageRow) -> None:
        """Queue one row. Never blocks and never raises; a full queue drops the row and counts it."""
        if len(self.queue) < self.capacity:
            self.queue.append(row)
            return
        self.dropped += 1
        if not self._drop_logged:
            self._drop_logged = True
            logger.warning("usage ledger queue is full (%d rows): dropping new rows", self.capacity)

    async def run(self) -> None:
        """Write queued rows until cancelled, then write what is left."""
        try:
            while True:
                await anyio.sleep(self.retry_interval if self.failing else self.flush_interval)
                await self.flush()
        finally:
            with anyio.move_on_after(self.busy_timeout + 1, shield=True):
                await self.flush()
                await anyio.to_thread.run_sync(self._close)

    async def flush(self) -> int:
        """Write the queue now, in batches; returns how many rows were written."""
        written = 0
        while self.queue:
            batch = [self.queue.popleft() for _ in range(min(self.batch_size, len(self.queue)))]
            if not await anyio.to_thread.run_sync(self._write, batch):
                self._requeue(batch)
                return written
            written += len(batch)
        if self.retention_days and time.monotonic() >= self._next_prune:
            await anyio.to_thread.run_sync(self._prune)
        return written

    def _requeue(self, batch: list[UsageRow]) -> None:
        self.queue.extendleft(reversed(batch))
        while len(self.queue) > self.capacity:
            self.queue.pop()
            self.dropped += 1

    # The methods below run in a worker thread, one at a time.

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout, check_same_thread=False)
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
                connection.executescript(_SCHEMA)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def _write(self, batch: list[UsageRow]) -> bool:
        try:
            connection = self._connect()
            with connection:
                connection.executemany(_INSERT, map(_ROW_VALUES, batch))
        except (sqlite3.Error, OSError) as error:
            self._failed(error)
            return False
        if self.failing:
            logger.info("usage ledger %s is writable again", self.path)
        self.failing = False
        self._drop_logged = False
        return True

    def _prune(self) -> None:
        cutoff = time.time() - self.retention_days * 86400
        try:
            with self._connect() as connection:
                connection.execute(f"DELETE FROM {TABLE} WHERE time < ?", (cutoff,))
        except (sqlite3.Error, OSError) as error:
            self._failed(error)
            return
        self._next_prune = time.monotonic() + self.prune_interval

    def _failed(self, error: Exception) -> None:
        self._close()
        if not self.failing:
            logger.warning(
                "usage ledger %s cannot be written (%s); calls are served as usual, "
                "rows are kept in memory and written when it works again",
                self.path,
                error,
            )
        self.failing = True

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
