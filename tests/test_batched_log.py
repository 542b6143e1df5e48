"""The console handler writes the lines of one event-loop turn with one write, in order; lines
from elsewhere go out at once, after what is pending."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

from ampbridge.batched_log import LoopBatchedStreamHandler


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def logger_writing_to(stream: CountingStream) -> tuple[logging.Logger, LoopBatchedStreamHandler]:
    handler = LoopBatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test-batched-{id(stream)}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, handler


def test_lines_of_one_loop_turn_go_out_in_one_write_in_order():
    stream = CountingStream()
    logger, _ = logger_writing_to(stream)

    async def run() -> list[str]:
        for number in range(5):
            logger.info("line %d", number)
        written_during_the_turn = list(stream.writes)
        await asyncio.sleep(0)  # the turn ends; the handler's flush runs
        await asyncio.sleep(0)
        return written_during_the_turn

    assert asyncio.run(run()) == []
    assert stream.writes == ["line 0\nline 1\nline 2\nline 3\nline 4\n"]


def test_a_line_from_another_thread_follows_the_pending_ones_at_once():
    stream = CountingStream()
    logger, _ = logger_writing_to(stream)

    async def run() -> None:
        logger.info("from the loop")
        thread = threading.Thread(target=logger.info, args=("from a thread",))
        thread.start()
        thread.join()
        assert stream.getvalue() == "from the loop\nfrom a thread\n"  # before the turn ended

    asyncio.run(run())
    assert stream.getvalue() == "from the loop\nfrom a thread\n"


def test_outside_a_loop_each_line_is_written_at_once():
    stream = CountingStream()
    logger, _ = logger_writing_to(stream)
    logger.info("one")
    assert stream.getvalue() == "one\n"
    logger.info("two")
    assert stream.writes == ["one\n", "two\n"]


def test_closing_writes_what_is_pending():
    stream = CountingStream()
    logger, handler = logger_writing_to(stream)

    async def run() -> None:
        logger.info("last words")
        handler.close()
        assert stream.getvalue() == "last words\n"  # before the turn ended

    asyncio.run(run())
