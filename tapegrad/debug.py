"""Seeing values inside functions that may be replayed: `tapegrad.debug.print`.

A replayed function (`tapegrad.replay`) runs its recorded NumPy calls, not
its Python code, so a plain ``print`` would show the traced call's values
once and then nothing. As ``jax.debug.print`` does, `print` here becomes part
of the recording: it prints on every call, eager or replayed, with that
call's values.
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

from ._replay._replayed import note_effect_recorded, perform, tracing
from ._core._tensor import Tensor

__all__ = ["print"]


def _show(fmt: str, *args: Any, **kwargs: Any) -> None:
    # Formatted now: a replay may reuse these arrays' memory before the line is printed.
    text = fmt.format(*args, **kwargs)
    perform(lambda: builtins.print(text))


def print(fmt: str, *args: Any, **kwargs: Any) -> None:  # noqa: A001 - jax.debug.print's name
    """Print ``fmt.format(*args, **kwargs)`` on every call, eager or replayed.

    Tensors (and the PyTorch-style wrapper's tensors) are formatted as their arrays.

    >>> import tapegrad as tg
    >>> tg.debug.print("loss {:.2f} at step {}", tg.tensor(0.25), 3)
    loss 0.25 at step 3
    """
    raw = tuple(_array_of(a) for a in args)
    raw_kwargs = {k: _array_of(v) for k, v in kwargs.items()}
    recording = tracing()
    if recording is None:
        _show(fmt, *raw, **raw_kwargs)
        return
    # Runs now and on every replay, with that call's values (or the same plain values).
    recording.record("call", _show, (fmt, *raw), raw_kwargs, lambda a, k: _show(*a, **k))
    note_effect_recorded()


def _array_of(value: Any) -> Any:
    """A tensor's array (traced inside a replay's trace); any other value as it is."""
    if isinstance(value, Tensor):
        return value.data
    # The wrapper's tensors exist only once it is imported; it is not imported for them.
    wrapper = sys.modules.get("tapegrad.torchlike._tensor")
    if wrapper is not None and isinstance(value, wrapper.Tensor):
        return value.value.data
    return value
