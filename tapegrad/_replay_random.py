"""Noticing a trace that draws from NumPy's global random generator, in this thread only.

A replay would freeze such a draw at the trace's numbers. The draws cannot be
seen as calls (NumPy's generator methods are compiled code that no profiler
hook reports), and comparing the global state before and after the trace
blames the traced function for any other thread's draw. So while a trace
runs, `np.random`'s module-level functions are wrapped: a wrapper notes the
draw only when the calling thread is tracing, and otherwise just calls through.
A function that bound a draw function before (``from numpy.random import
normal``) bypasses the wrappers; for it, the state comparison still decides
when this is the only thread.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

_LOCK = threading.Lock()
_installed: dict[str, Callable[..., Any]] = {}  # name -> the original, while any trace runs
_tracers = 0
_local = threading.local()


def _global_draw_functions() -> dict[str, Callable[..., Any]]:
    """``np.random``'s functions that are methods of the global legacy generator."""
    shared = np.random.mtrand._rand
    return {
        name: fn for name in dir(np.random)
        if getattr(fn := getattr(np.random, name), "__self__", None) is shared
        and name != "get_state"  # reads the state without changing it
    }


def _watching(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def draw(*args: Any, **kwargs: Any) -> Any:
        drawn = getattr(_local, "drawn", None)
        if drawn is not None:
            drawn.append(name)
        return original(*args, **kwargs)

    return draw


@contextmanager
def watch_global_random() -> Iterator[Callable[[], bool]]:
    """Inside the block, note this thread's draws from ``np.random.*``.

    Yields a function that says, after the block, whether this thread drew.
    """
    global _tracers
    with _LOCK:
        if _tracers == 0:
            for name, fn in _global_draw_functions().items():
                _installed[name] = fn
                setattr(np.random, name, _watching(name, fn))
        _tracers += 1
    outer = getattr(_local, "drawn", None)
    drawn: list[str] = []
    _local.drawn = drawn
    before = np.random.get_state(legacy=False)
    alone = threading.active_count() == 1
    try:
        yield lambda: bool(drawn) or (alone and not _same_state(before, np.random.get_state(legacy=False)))
    finally:
        _local.drawn = outer
        with _LOCK:
            _tracers -= 1
            if _tracers == 0:
                for name, fn in _installed.items():
                    setattr(np.random, name, fn)
                _installed.clear()


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["state"]["pos"] == b["state"]["pos"] and bool(np.array_equal(a["state"]["key"], b["state"]["key"]))
