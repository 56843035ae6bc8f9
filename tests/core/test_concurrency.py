"""Tapes on many threads or async tasks at once record only their own ops.

The active tapes live in a `ContextVar`: each thread, and each asyncio task,
sees its own. So eight training loops run at the same time must give, bit for
bit, what the same eight give one after another, and async tasks interleaving
their forward passes must get the gradients each would get alone.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import tree
from tapegrad.nn import MLP, cross_entropy

SIZES = (20, 32, 16, 4)
BATCH = 64
STEPS = 50
RUNS = 8


@attrs.frozen
class Run:
    """What one training run leaves: its parameters, and per step its loss and tape length."""

    params: Any
    losses: list[float]
    records: list[int]


def train(seed: int, barrier: threading.Barrier | None = None) -> Run:
    """50 Adam steps of a small MLP on data of its own, all drawn from ``seed``."""
    init_key, x_key, y_key = tg.random.split(tg.random.key(seed), 3)
    model = MLP(SIZES)
    params = model.init(init_key)
    x = tg.random.normal(x_key, (BATCH, SIZES[0]))
    y = tg.tensor(y_key.generator().integers(0, SIZES[-1], BATCH))
    opt = tg.optim.adam(1e-2)
    state = opt.init(params)
    losses: list[float] = []
    records: list[int] = []
    if barrier is not None:
        barrier.wait(timeout=60)  # every thread starts its loop together
    for _ in range(STEPS):
        with tg.Tape() as tape:
            loss = cross_entropy(model.apply(params, x), y)
        records.append(len(tape))  # a foreign op recorded here would show
        grads = tape.gradient(loss, params)
        params, state = opt.update(grads, state, params)
        losses.append(loss.item())
    return Run(params, losses, records)


def fingerprint(run: Run) -> tuple[list[tuple[str, tuple[int, ...], bytes]], list[str], list[int]]:
    """Every bit of a run's result: leaf dtypes, shapes and bytes, losses as hex floats."""
    leaves = [(str(p.dtype), p.shape, p.numpy().tobytes()) for p in tree.leaves(run.params)]
    return leaves, [loss.hex() for loss in run.losses], run.records


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads about every microsecond, so the training loops interleave finely."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.mark.usefixtures("frequent_thread_switches")
def test_eight_threads_train_as_if_one_after_another() -> None:
    # BLAS: these matrices (64 x 32 at most) are far below the size at which
    # OpenBLAS splits a product across its own threads, so each product is
    # computed the same way whatever else runs; no thread limit is needed.
    seeds = list(range(100, 100 + RUNS))
    one_after_another = [fingerprint(train(seed)) for seed in seeds]
    barrier = threading.Barrier(RUNS)
    with ThreadPoolExecutor(max_workers=RUNS) as pool:
        futures = [pool.submit(train, seed, barrier) for seed in seeds]
        at_once = [fingerprint(f.result(timeout=120)) for f in futures]
    for seed, want, got in zip(seeds, one_after_another, at_once):
        assert got[2] == want[2], f"seed {seed}: a tape recorded another thread's ops"
        assert got[1] == want[1], f"seed {seed}: loss history differs"
        assert got[0] == want[0], f"seed {seed}: final parameters differ"
    # The eight runs are different runs, so equality above is not vacuous.
    assert len({tuple(f[1]) for f in one_after_another}) == RUNS


def test_a_threads_tapes_do_not_see_the_main_threads_tape() -> None:
    w = tg.tensor([1.0, 2.0])
    inner: list[int] = []

    def work() -> None:
        with tg.Tape() as tape:
            (w * w).sum()
        inner.append(len(tape))

    with tg.Tape() as outer:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    assert (inner, len(outer)) == ([2], 0)


async def forward_with_pauses(scale: float, log: list[str], name: str) -> tuple[int, tg.Tensor]:
    """sum(sin(scale * w) ** 2) with an ``await`` between ops; returns the tape length and dL/dw."""
    w = tg.tensor([0.5, -1.0, 2.0])
    with tg.Tape() as tape:
        y = w * scale
        log.append(name)
        await asyncio.sleep(0)
        z = tg.sin(y)
        log.append(name)
        await asyncio.sleep(0)
        loss = (z * z).sum()
        log.append(name)
        await asyncio.sleep(0)
    records = len(tape)
    await asyncio.sleep(0)
    return records, tape.gradient(loss, w)


def test_async_tasks_interleaving_forward_ops_get_their_own_gradients() -> None:
    scales = [0.5, 1.0, 1.5, 2.0, 3.0]

    async def main() -> list[tuple[int, tg.Tensor]]:
        return await asyncio.gather(
            *(forward_with_pauses(s, log, f"task{i}") for i, s in enumerate(scales))
        )

    log: list[str] = []
    at_once = asyncio.run(main())
    # The tasks really took turns op by op.
    assert log[: len(scales)] == [f"task{i}" for i in range(len(scales))]

    w = np.array([0.5, -1.0, 2.0], dtype=np.float32)
    for scale, (records, grad) in zip(scales, at_once):
        alone = asyncio.run(forward_with_pauses(scale, [], "alone"))
        assert records == 4  # mul, sin, mul, sum: another task's op would make it more
        assert grad.numpy().tobytes() == alone[1].numpy().tobytes()
        y = np.float32(scale) * w
        np.testing.assert_allclose(grad.numpy(), 2 * np.sin(y) * np.cos(y) * scale, rtol=1e-5)
