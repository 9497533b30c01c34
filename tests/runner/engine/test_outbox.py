"""The worker-to-loop hand-off: callbacks queued on another thread run on the loop, in order,
only once flushed, and a burst of flushes costs the loop one wake-up."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from runner.engine.outbox import outbox_for


async def _from_thread(work: Callable[[], object]) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    await asyncio.to_thread(thread.join)


async def test_callbacks_run_on_the_loop_thread_in_order_after_a_flush() -> None:
    loop = asyncio.get_running_loop()
    outbox = outbox_for(loop)
    seen: list[tuple[int, int]] = []
    done = loop.create_future()

    def record(n: int) -> None:
        seen.append((n, threading.get_ident()))
        if n == 99:
            done.set_result(None)

    def worker() -> None:
        for n in range(100):
            outbox.put(record, n)
            if n % 7 == 0:
                outbox.flush()
        outbox.flush()

    await _from_thread(worker)
    await asyncio.wait_for(done, 5)
    assert [n for n, _ in seen] == list(range(100))
    assert {ident for _, ident in seen} == {threading.get_ident()}


async def test_nothing_runs_before_a_flush() -> None:
    outbox = outbox_for(asyncio.get_running_loop())
    seen: list[int] = []
    await _from_thread(lambda: outbox.put(seen.append, 1))
    await asyncio.sleep(0.05)
    assert seen == []
    await _from_thread(outbox.flush)
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.01)
    assert seen == [1]


async def test_one_outbox_per_loop_and_a_failing_callback_does_not_stop_the_rest() -> None:
    loop = asyncio.get_running_loop()
    assert outbox_for(loop) is outbox_for(loop)
    outbox = outbox_for(loop)
    seen: list[str] = []
    done = loop.create_future()

    def boom() -> None:
        raise RuntimeError("callback failure")

    def worker() -> None:
        outbox.put(boom)
        outbox.put(seen.append, "after")
        outbox.put(done.set_result, None)
        outbox.flush()

    await _from_thread(worker)
    await asyncio.wait_for(done, 5)
    assert seen == ["after"]
