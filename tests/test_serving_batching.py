"""GreedyBatcher: order, batch forming, concurrency limit, errors and cancellation (no Ray needed)."""

from __future__ import annotations

import asyncio

import pytest

from serving.batching import GreedyBatcher


class Recorder:
    """A batch function that records its batches and how many calls overlap."""

    def __init__(self, delay: float = 0.01, fail_on: object = None) -> None:
        self.delay, self.fail_on = delay, fail_on
        self.batches: list[list[int]] = []
        self.running = self.max_running = 0

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.fail_on in items:
                raise ValueError(f"bad item {self.fail_on}")
            return [i * 10 for i in items]
        finally:
            self.running -= 1


def run(coro):
    return asyncio.run(coro)


def test_results_in_order_and_same_turn_items_share_a_batch():
    async def main():
        rec = Recorder()
        b = GreedyBatcher(rec, max_batch_size=64, max_in_flight=2)
        out = await asyncio.gather(*(b(i) for i in range(20)))
        return rec, b, out

    rec, b, out = run(main())
    assert out == [i * 10 for i in range(20)]
    assert rec.batches == [list(range(20))]  # one turn, one batch, no timer needed
    assert list(b.batch_sizes) == [20]


def test_lone_request_is_sent_at_once():
    async def main():
        rec = Recorder(delay=0)
        b = GreedyBatcher(rec, max_in_flight=1)
        loop = asyncio.get_running_loop()
        t = loop.time()
        assert await b(7) == 70
        return loop.time() - t

    assert run(main()) < 0.05


def test_batch_size_and_in_flight_limits_and_busy_batches_grow():
    async def main():
        rec = Recorder(delay=0.02)
        b = GreedyBatcher(rec, max_batch_size=4, max_in_flight=2)
        first = [asyncio.ensure_future(b(i)) for i in range(10)]  # 4 + 4 go, 2 wait for a slot
        await asyncio.sleep(0.005)
        later = [asyncio.ensure_future(b(i)) for i in range(10, 13)]  # queue behind while busy
        out = await asyncio.gather(*first, *later)
        return rec, out

    rec, out = run(main())
    assert out == [i * 10 for i in range(13)]
    assert rec.max_running == 2
    assert all(len(x) <= 4 for x in rec.batches)
    assert rec.batches[:2] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert rec.batches[2] == [8, 9, 10, 11]  # queued while busy: one larger batch, not 8,9 then 10..
    assert sorted(i for x in rec.batches for i in x) == list(range(13))


def test_an_error_reaches_every_request_of_its_batch_only():
    async def main():
        rec = Recorder(fail_on=3)
        b = GreedyBatcher(rec, max_batch_size=4, max_in_flight=2)
        res = await asyncio.gather(*(b(i) for i in range(8)), return_exceptions=True)
        again = await b(5)  # the batcher keeps working
        return res, again

    res, again = run(main())
    assert all(isinstance(r, ValueError) for r in res[:4]) and res[4:] == [40, 50, 60, 70]
    assert again == 50


def test_wrong_number_of_results_is_an_error():
    async def bad(items: list[int]) -> list[int]:
        return items[:-1]

    async def main():
        b = GreedyBatcher(bad)
        return await asyncio.gather(b(1), b(2), return_exceptions=True)

    res = run(main())
    assert all(isinstance(r, RuntimeError) and "2 items" in str(r) for r in res)


def test_cancelled_waiting_request_is_skipped():
    async def main():
        rec = Recorder(delay=0.02)
        b = GreedyBatcher(rec, max_batch_size=8, max_in_flight=1)
        busy = asyncio.ensure_future(b(0))
        await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(b(1))
        kept = asyncio.ensure_future(b(2))
        await asyncio.sleep(0)
        gone.cancel()
        return rec, await busy, await kept, gone.cancelled()

    rec, busy, kept, cancelled = run(main())
    assert (busy, kept, cancelled) == (0, 20, True)
    assert rec.batches == [[0], [2]]


def test_rejects_bad_limits():
    with pytest.raises(ValueError):
        GreedyBatcher(Recorder(), max_batch_size=0)
    with pytest.raises(ValueError):
        GreedyBatcher(Recorder(), max_in_flight=0)
