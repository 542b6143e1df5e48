"""The usage ledger: every call becomes a row, recording never waits on the database, and a
database that cannot be written is logged once while calls go on."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

from ampbridge.accounting import ReplyOutcome, TokenUsage
from ampbridge.ledger import UsageLedger, UsageRow

from .servers import eventually

WORKTREE = Path(__file__).resolve().parents[1]


def row(number: int = 0, *, at: float | None = None, decision: str = "LOCAL") -> UsageRow:
    outcome = ReplyOutcome(
        status=200,
        usage=TokenUsage(input_tokens=100 + number, output_tokens=number, cache_read_tokens=1),
        ttfb=0.05,
        duration=0.25,
        completed=True,
    )
    return UsageRow.of_call(
        outcome,
        decision=decision,
        client="client-1",
        provider="anthropic",
        requested_model="claude-opus-9",
        served_model="claude-opus-4-7",
        time=time.time() if at is None else at,
    )


def rows_in(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT * FROM calls ORDER BY id").fetchall()


async def until(check: Callable[[], object]) -> None:
    """Waits, without holding up the event loop, for what no event announces (a worker thread's write)."""
    assert await anyio.to_thread.run_sync(eventually, check, 10.0)


def test_a_row_keeps_what_the_call_reported(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.db")
    ledger.record(row(7, at=1_800_000_000.0, decision="MAPPED"))
    assert anyio.run(ledger.flush) == 1
    ((_, *stored),) = rows_in(tmp_path / "usage.db")
    assert stored == [
        1_800_000_000.0,
        "MAPPED",
        "client-1",
        "anthropic",
        "claude-opus-9",
        "claude-opus-4-7",
        107,
        7,
        1,
        0,
        200,
        250.0,
        50.0,
    ]
    with sqlite3.connect(tmp_path / "usage.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_call_without_usage_stores_no_token_counts(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.db")
    outcome = ReplyOutcome(status=0, usage=None, ttfb=None, duration=0.01, completed=False)
    ledger.record(
        UsageRow.of_call(
            outcome,
            decision="NO_PROVIDER",
            client="",
            provider="openai",
            requested_model="m",
            served_model="m",
            time=time.time(),
        )
    )
    anyio.run(ledger.flush)
    ((*_, tokens_in, tokens_out, read, created, status, _duration, ttfb),) = rows_in(tmp_path / "usage.db")
    assert (tokens_in, tokens_out, read, created, status, ttfb) == (None, None, None, None, 0, None)


def test_a_thousand_concurrent_calls_leave_a_thousand_rows(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.db", flush_interval=0.01, batch_size=64)

    async def call(number: int) -> None:
        await anyio.lowlevel.checkpoint()
        ledger.record(row(number))

    async def main() -> None:
        async with anyio.create_task_group() as writer:
            writer.start_soon(ledger.run)
            async with anyio.create_task_group() as calls:
                for number in range(1000):
                    calls.start_soon(call, number)
            await until(lambda: not ledger.queue and len(rows_in(tmp_path / "usage.db")) == 1000)
            writer.cancel_scope.cancel()

    anyio.run(main)
    stored = rows_in(tmp_path / "usage.db")
    assert sorted(r[8] for r in stored) == list(range(1000))  # output_tokens = the call's number
    assert ledger.dropped == 0


def test_record_never_waits_while_the_writer_waits_on_a_lock(tmp_path: Path) -> None:
    """A thousand ``record()`` calls complete while the database is locked and the writer is
    stuck on that lock: had one of them touched the database, it would have waited (up to the
    30 s busy timeout) and the lock would never have been released. (How fast they are is
    measured in ``benchmarks/``, not asserted here.)"""
    path = tmp_path / "usage.db"
    ledger = UsageLedger(path, busy_timeout=30)
    ledger.record(row(0))
    anyio.run(ledger.flush)  # the file and table exist
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def main() -> None:
        async with anyio.create_task_group() as tasks:
            ledger.record(row(1))
            tasks.start_soon(ledger.flush)
            await until(lambda: not ledger.queue)  # the writer took the row and waits on the lock
            for number in range(2, 1002):
                ledger.record(row(number))
            assert len(rows_in_uncommitted(path)) == 1  # nothing written while the lock is held
            blocker.execute("COMMIT")

    anyio.run(main)
    blocker.close()
    assert len(rows_in(path)) == 1002


def rows_in_uncommitted(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path, timeout=0) as connection:  # readers are not blocked in WAL mode
        return connection.execute("SELECT id FROM calls").fetchall()


def test_rows_survive_a_restart(tmp_path: Path) -> None:
    first = UsageLedger(tmp_path / "usage.db")
    first.record(row(1))

    async def run_briefly(ledger: UsageLedger) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(ledger.run)
            await anyio.lowlevel.checkpoint()
            tasks.cancel_scope.cancel()  # shutdown writes what is still queued

    anyio.run(run_briefly, first)
    second = UsageLedger(tmp_path / "usage.db")
    second.record(row(2))
    anyio.run(run_briefly, second)
    assert [r[8] for r in rows_in(tmp_path / "usage.db")] == [1, 2]


def test_a_full_queue_drops_new_rows_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = UsageLedger(tmp_path / "usage.db", capacity=3)
    for number in range(5):
        ledger.record(row(number))
    assert ledger.dropped == 2
    assert caplog.text.count("queue is full") == 1
    anyio.run(ledger.flush)
    assert [r[8] for r in rows_in(tmp_path / "usage.db")] == [0, 1, 2]


def test_an_unwritable_place_is_logged_once_and_rows_wait_until_it_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "data"
    blocked.write_text("a file where the data directory should be")
    ledger = UsageLedger(blocked / "ampbridge" / "usage.db")
    caplog.set_level(logging.INFO, "ampbridge.ledger")
    for attempt in range(3):
        ledger.record(row(attempt))
        assert anyio.run(ledger.flush) == 0
    assert ledger.failing
    assert len(ledger.queue) == 3
    assert caplog.text.count("cannot be written") == 1
    blocked.unlink()  # the disk is usable again
    assert anyio.run(ledger.flush) == 3
    assert [r[8] for r in rows_in(blocked / "ampbridge" / "usage.db")] == [0, 1, 2]
    assert "writable again" in caplog.text


def test_old_rows_are_pruned_after_the_retention_period(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path / "usage.db", retention_days=30)
    now = time.time()
    ledger.record(row(1, at=now - 31 * 86400))
    ledger.record(row(2, at=now - 29 * 86400))
    ledger.record(row(3, at=now))
    anyio.run(ledger.flush)
    assert [r[8] for r in rows_in(tmp_path / "usage.db")] == [2, 3]


READ_ONLY_SCENARIO = textwrap.dedent(
    """
    import json, logging, sys, time
    import anyio
    from ampbridge.ledger import UsageLedger, UsageRow
    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())
    logging.getLogger("ampbridge").addHandler(Keep())
    ledger = UsageLedger(sys.argv[1], busy_timeout=1)
    slowest = 0
    for attempt in range(3):
        row = UsageRow(time=time.time(), decision="LOCAL", client="c", provider="p",
                       requested_model="m", served_model="m", input_tokens=1, output_tokens=1,
                       cache_read_tokens=0, cache_creation_tokens=0, status=200,
                       duration_ms=1.0, ttfb_ms=1.0)
        started = time.perf_counter()
        ledger.record(row)
        slowest = max(slowest, time.perf_counter() - started)
        anyio.run(ledger.flush)
    print(json.dumps({"queued": len(ledger.queue), "failing": ledger.failing,
                      "lines": lines, "slowest": slowest}))
    """
)


def without_permission_override() -> None:
    """In the child, before exec: give up root's power to write where permissions say no
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a read-only directory is read-only for it too."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for capability in (1, 2):
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_a_read_only_database_directory_never_fails_a_record(tmp_path: Path) -> None:
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    result = subprocess.run(
        [sys.executable, "-c", READ_ONLY_SCENARIO, str(directory / "usage.db")],
        cwd=WORKTREE,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=without_permission_override if os.geteuid() == 0 else None,
    )
    directory.chmod(0o755)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["queued"] == 3 and report["failing"]
    assert [line for line in report["lines"] if "cannot be written" in line] == [report["lines"][0]]
    assert len(report["lines"]) == 1
    assert report["slowest"] < 0.005
