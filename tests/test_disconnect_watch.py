"""The disconnect watchers of ``proxy``: one timer per loop starts them once an exchange has run
50-100 ms, a gone client then cancels the relaying task, and no loop is kept alive by them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

from ampbridge.proxy import WATCH_AFTER, _DisconnectWatch, _Outcome


async def never_disconnects() -> dict:
    await asyncio.Event().wait()
    return {}


def test_a_short_exchange_never_starts_a_watcher():
    async def exchange() -> _DisconnectWatch:
        done = asyncio.Event()
        done.set()
        watch = _DisconnectWatch(never_disconnects, done, _Outcome())
        await asyncio.sleep(0)
        watch.stop()
        await asyncio.sleep(2.5 * WATCH_AFTER)
        return watch

    assert asyncio.run(exchange()).task is None


def test_a_long_exchange_is_cancelled_when_its_client_goes():
    async def run() -> tuple[_Outcome, float]:
        gone = asyncio.Event()

        async def receive() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        done = asyncio.Event()
        done.set()
        outcome = _Outcome()
        loop = asyncio.get_running_loop()

        async def relaying() -> None:
            watch = _DisconnectWatch(receive, done, outcome)
            try:
                await asyncio.sleep(10)
            finally:
                watch.stop()

        started = loop.time()
        task = asyncio.create_task(relaying())
        await asyncio.sleep(0.01)
        gone.set()  # the client leaves early; the watcher notices once it starts
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return outcome, loop.time() - started

    outcome, took = asyncio.run(run())
    assert outcome.client_gone
    assert WATCH_AFTER <= took < 2 * WATCH_AFTER + 0.5


def test_no_event_loop_is_kept_alive_by_the_registry():
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def one_exchange() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        done = asyncio.Event()
        watch = _DisconnectWatch(never_disconnects, done, _Outcome())
        await asyncio.sleep(0)
        watch.stop()

    for _ in range(3):
        asyncio.run(one_exchange())
    gc.collect()
    assert [loop() for loop in loops] == [None, None, None]
