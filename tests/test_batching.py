"""Batcher: concurrent calls share one batch call; a refused call fails alone."""

from __future__ import annotations

import asyncio

import pytest

from bot.runtime.batching import Batcher


async def test_calls_arriving_during_a_batch_go_out_together_in_order() -> None:
    seen: list[list[int]] = []

    async def run(items: list[int]) -> list[int]:
        seen.append(list(items))
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run)
    results = await asyncio.gather(*(batcher(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    # the first call goes at once, the 19 that came meanwhile in one batch
    assert seen == [[0], list(range(1, 20))]
    assert (batcher.batches, batcher.calls) == (2, 20)


async def test_an_idle_batcher_sends_each_call_alone() -> None:
    async def run(items: list[str]) -> list[str]:
        return [s.upper() for s in items]

    batcher: Batcher[str, str] = Batcher(run)
    assert [await batcher(s) for s in "abc"] == ["A", "B", "C"]
    assert batcher.batches == 3


async def test_batches_are_capped() -> None:
    sizes: list[int] = []

    async def run(items: list[int]) -> list[None]:
        sizes.append(len(items))
        await asyncio.sleep(0.005)
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(run, max_batch=4)
    await asyncio.gather(*(batcher(i) for i in range(11)))
    assert max(sizes) == 4 and sum(sizes) == 11


async def test_a_refused_item_fails_alone_and_the_others_are_applied() -> None:
    applied: list[int] = []

    async def run(items: list[int]) -> list[None]:
        await asyncio.sleep(0.005)
        if 13 in items:
            raise ValueError("the database refuses 13")
        applied.extend(items)
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(run)
    results = await asyncio.gather(*(batcher(i) for i in (1, 13, 2, 3)), return_exceptions=True)
    assert results[0] is None and isinstance(results[1], ValueError) and results[2:] == [None, None]
    assert sorted(applied) == [1, 2, 3]


async def test_a_wrong_number_of_results_is_an_error_for_every_caller() -> None:
    async def run(items: list[int]) -> list[int]:
        return []

    batcher: Batcher[int, int] = Batcher(run)
    with pytest.raises(RuntimeError):
        await batcher(1)


async def test_a_cancelled_caller_does_not_stop_the_batch_it_shares() -> None:
    applied: list[int] = []

    async def run(items: list[int]) -> list[None]:
        await asyncio.sleep(0.02)
        applied.extend(items)
        return [None] * len(items)

    batcher: Batcher[int, None] = Batcher(run)
    first = asyncio.create_task(batcher(1))
    await asyncio.sleep(0)
    second = asyncio.create_task(batcher(2))
    third = asyncio.create_task(batcher(3))
    await asyncio.sleep(0)
    second.cancel()
    await asyncio.gather(first, second, third, return_exceptions=True)
    assert second.cancelled() and third.done() and not third.cancelled()
    assert applied == [1, 2, 3]
