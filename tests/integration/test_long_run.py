"""Long training keeps memory flat, and a persistent tape kept by mistake is reported.

Memory is measured three ways, none of them with a clock: the process's
resident set (``/proc/self/statm``), the number of live Python allocations
(`sys.getallocatedblocks`: a leaked tensor leaks at least its array object),
and `tracemalloc` over a late window (it costs about 7x per step while
tracing, so it traces only the last steps rather than all 5,000).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import tracemalloc
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import tapegrad as tg
from tapegrad._core import _tape
from tapegrad.nn import MLP, cross_entropy

STEPS = 5_000
WARM = 500  # steps before the first measurement: caches and malloc's arenas have settled
TRACE_FROM = 4_850  # tracemalloc starts here; traced memory is compared at TRACE_AT
TRACE_AT = (4_900, 5_000)
MAX_RSS_GROWTH = 8 * 1024 * 1024  # one step's arrays are ~0.5 MB; leaking them per step is GBs
MAX_BLOCK_GROWTH = 1_000  # one leaked object per step would be 4,300 blocks
MAX_TRACED_GROWTH = 8 * 1024  # over 100 steps: under 80 bytes a step


def rss_bytes() -> int:
    """The resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def train_and_measure() -> dict[str, Any]:
    """Train 5,000 steps and measure memory along the way; returns what the test asserts on."""
    # The seed's MLP and batch size, on 16 fixed random batches cycled. No
    # retain_freed_memory(): the bounds hold without tuning malloc.
    model = MLP((784, 128, 64, 10))
    params = model.init(tg.random.key(0))
    opt = tg.optim.adam(1e-3)
    state = opt.init(params)
    rng = np.random.default_rng(0)
    xs = [tg.tensor(rng.random((32, 784), dtype=np.float32)) for _ in range(16)]
    ys = [tg.tensor(rng.integers(0, 10, 32)) for _ in range(16)]
    losses = np.empty(STEPS)  # preallocated: a growing list would itself be growth
    seen: dict[str, int] = {}
    traced: list[int] = []
    for step in range(1, STEPS + 1):
        with tg.Tape() as tape:
            loss = cross_entropy(model.apply(params, xs[step % 16]), ys[step % 16])
        grads = tape.gradient(loss, params)
        params, state = opt.update(grads, state, params)
        losses[step - 1] = loss.item()
        del tape, grads, loss
        if step in (WARM, TRACE_FROM):
            gc.collect()
            key = "warm" if step == WARM else "late"
            seen[f"rss_{key}"], seen[f"blocks_{key}"] = rss_bytes(), sys.getallocatedblocks()
        if step == TRACE_FROM:
            tracemalloc.start()
        if step in TRACE_AT:
            gc.collect()
            traced.append(tracemalloc.get_traced_memory()[0])
    top = [str(s) for s in tracemalloc.take_snapshot().statistics("lineno")[:5]]
    tracemalloc.stop()
    return {
        "finite": bool(np.isfinite(losses).all()),
        "first_losses": float(losses[:100].mean()),
        "last_losses": float(losses[-100:].mean()),
        "rss_growth": seen["rss_late"] - seen["rss_warm"],
        "block_growth": seen["blocks_late"] - seen["blocks_warm"],
        "traced_growth": traced[1] - traced[0],
        "top": top,
    }


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux's /proc")
def test_five_thousand_steps_keep_memory_flat() -> None:
    # In a fresh process, for two reasons. Its memory holds only this run,
    # not what earlier tests left. And BLAS gets one thread: on a busy two-core
    # machine OpenBLAS's spinning worker threads made these 5,000 steps take
    # anywhere from 10 s to 170 s; with one thread they take about 10 s.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, __file__], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])

    assert got["finite"] and got["last_losses"] < got["first_losses"]  # it trained
    assert got["rss_growth"] < MAX_RSS_GROWTH, (
        f"RSS grew {got['rss_growth']} bytes from step {WARM} to {TRACE_FROM}"
    )
    assert got["block_growth"] < MAX_BLOCK_GROWTH, (
        f"{got['block_growth']} more live Python allocations at step {TRACE_FROM} than at "
        f"step {WARM}"
    )
    assert got["traced_growth"] < MAX_TRACED_GROWTH, (
        f"traced memory grew {got['traced_growth']} bytes from step {TRACE_AT[0]} to "
        f"{TRACE_AT[1]}; largest live allocations made since tracing began:\n"
        + "\n".join(got["top"])
    )


# ---- a persistent tape kept by mistake --------------------------------------------


def small_persistent_tape() -> tuple[tg.Tape, tg.Tensor, tg.Tensor]:
    """A persistent tape holding two records, w * w (3 float32s) and its sum (1); and loss, w."""
    w = tg.tensor([1.0, 2.0, 3.0])
    with tg.Tape(persistent=True) as tape:
        loss = (w * w).sum()
    return tape, loss, w


@pytest.fixture
def threshold_8_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tape, "RESOURCE_WARNING_BYTES", 8)


@pytest.fixture
def resource_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every ResourceWarning raised inside the test (all others stay errors)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield caught


def resource_warning_texts(caught: list[warnings.WarningMessage]) -> list[str]:
    gc.collect()
    return [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]


def test_repr_shows_records_and_bytes() -> None:
    tape = small_persistent_tape()[0]
    assert repr(tape) == "Tape(persistent=True, records=2, bytes=16)"
    tape.close()
    assert repr(tape) == "Tape(persistent=True, records=0, bytes=0)"


def test_the_default_threshold_is_16_mib() -> None:
    assert _tape.RESOURCE_WARNING_BYTES == 16 * 1024 * 1024


@pytest.mark.usefixtures("threshold_8_bytes")
def test_a_dropped_persistent_tape_over_the_threshold_warns(
    resource_warnings: list[warnings.WarningMessage],
) -> None:
    tape, loss, w = small_persistent_tape()
    tape.gradient(loss, w)  # used, but not closed
    del tape
    assert resource_warning_texts(resource_warnings) == [
        "Tape: a persistent tape was garbage-collected while holding 2 records (16 bytes of "
        "arrays); call tape.close() once you are done with its gradients, or use "
        "Tape(persistent=False) if one gradient() call is enough"
    ]


@pytest.mark.usefixtures("threshold_8_bytes")
def test_a_closed_persistent_tape_does_not_warn(
    resource_warnings: list[warnings.WarningMessage],
) -> None:
    tape = small_persistent_tape()[0]
    tape.close()
    del tape
    assert resource_warning_texts(resource_warnings) == []


@pytest.mark.usefixtures("threshold_8_bytes")
def test_non_persistent_tapes_do_not_warn(resource_warnings: list[warnings.WarningMessage]) -> None:
    w = tg.tensor([1.0, 2.0, 3.0])
    with tg.Tape() as used:
        loss = (w * w).sum()
    used.gradient(loss, w)
    with tg.Tape() as unused:  # never differentiated: still not a persistent tape kept
        (w * w).sum()
    del used, unused
    assert resource_warning_texts(resource_warnings) == []


def test_a_small_persistent_tape_does_not_warn(
    resource_warnings: list[warnings.WarningMessage],
) -> None:
    tape = small_persistent_tape()[0]
    del tape
    assert resource_warning_texts(resource_warnings) == []


def test_a_half_built_tape_is_collected_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    tape = tg.Tape.__new__(tg.Tape)  # __init__ never ran: no attributes at all
    del tape
    gc.collect()
    assert unraisable == []


if __name__ == "__main__":  # the memory test's worker process
    print(json.dumps(train_and_measure()))
