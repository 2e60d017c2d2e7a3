"""`llm-router up`'s demo loop: Ctrl-C must reach it even through code that eats cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from deploy.demo import run_interruptibly


@pytest.fixture(autouse=True)
def default_sigint() -> Iterator[None]:
    """Python's own SIGINT handler, whatever this test process inherited: a suite started as
    a background job of a script inherits SIGINT ignored (seen: every SIGINT here was lost)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


async def _swallows_cancellation(log: list[str]) -> str:
    asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGINT)
    try:
        await asyncio.sleep(5)
    except asyncio.CancelledError:
        log.append("cancellation eaten")  # what some library code does
    log.append("ran to the end")
    return "done"


def test_plain_asyncio_run_loses_a_ctrl_c_that_was_swallowed() -> None:
    log: list[str] = []
    assert asyncio.run(_swallows_cancellation(log)) == "done"
    assert log == ["cancellation eaten", "ran to the end"]


def test_run_interruptibly_raises_keyboard_interrupt_anyway() -> None:
    log: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(_swallows_cancellation(log))
    assert log == ["cancellation eaten", "ran to the end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


def test_run_interruptibly_cancels_and_returns_results() -> None:
    async def sleeper() -> None:
        asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGINT)
        await asyncio.sleep(5)

    with pytest.raises(KeyboardInterrupt):
        run_interruptibly(sleeper())
    assert run_interruptibly(asyncio.sleep(0, "x")) == "x"
