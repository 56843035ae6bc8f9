"""Opt-in anomaly mode: stop at the first op that makes a NaN or an infinity.

Off by default, because checking every result costs a pass over its data.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._tensor import Tensor

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class AnomalyState:
    """The `debug_nans` blocks open in one thread or task, and where each checked result was made.

    A value, replaced (never changed) as blocks open and close, except for
    ``origins``, which nested blocks share.
    """

    __slots__ = ("blocks", "origins", "numpy_errors")

    def __init__(self, blocks: tuple[object, ...], origins: dict[int, str], numpy_errors: Any) -> None:
        self.blocks = blocks
        self.origins = origins
        # NumPy's error settings from before the first block opened, restored when the last closes.
        self.numpy_errors = numpy_errors


#: The `debug_nans` blocks open in this thread or async task, if any. A context
#: variable, as the tapes are, so one thread's block never checks another's ops.
ACTIVE: ContextVar[AnomalyState | None] = ContextVar("tapegrad_debug_nans", default=None)
# Inside a backward rule, whose cotangents are checked as a whole.
_IN_RULE: ContextVar[bool] = ContextVar("tapegrad_debug_nans_in_rule", default=False)


@contextmanager
def debug_nans() -> Iterator[None]:
    """Raise `FloatingPointError` at the first op whose result is not finite.

    Inside the block, every op checks its output, and every backward rule its
    cotangents. The error names the op, forward or backward, and the line of
    user code that called it. The block covers this thread (or async task)
    only, as a `Tape` does.

    >>> import tapegrad as tg
    >>> with tg.debug_nans():
    ...     tg.log(tg.tensor([-1.0]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    FloatingPointError: `log` produced nan in its forward pass, called at ...
    """
    # Each block is removed by itself when it closes, as a Tape is: blocks can close
    # out of order (a generator or an ExitStack holding one), and resetting to the
    # state at entry would switch off blocks opened since and revive closed ones.
    block = object()
    state = ACTIVE.get()
    if state is None:
        # NumPy's own RuntimeWarning would fire first (and is an error under
        # strict warning filters); this mode reports the op itself instead. Not
        # np.errstate, which resets on exit and so has the same out-of-order trouble.
        saved = np.seterr(divide="ignore", over="ignore", invalid="ignore")
        ACTIVE.set(AnomalyState((block,), {}, saved))
    else:
        ACTIVE.set(AnomalyState((*state.blocks, block), state.origins, state.numpy_errors))
    try:
        yield
    finally:
        state = ACTIVE.get()
        if state is not None and any(b is block for b in state.blocks):
            rest = tuple(b for b in state.blocks if b is not block)
            if rest:
                ACTIVE.set(AnomalyState(rest, state.origins, state.numpy_errors))
            else:
                ACTIVE.set(None)
                np.seterr(**state.numpy_errors)


@contextmanager
def rule_running() -> Iterator[None]:
    """Skip forward checks of the ops inside a backward rule.

    A non-finite value made there is reported by `check_backward` under the
    name of the op whose rule it is, not as the rule's `div` or `mul`.
    """
    token = _IN_RULE.set(True)
    try:
        yield
    finally:
        _IN_RULE.reset(token)


def check_forward_if_on(name: str, out: Tensor) -> None:
    """`check_forward` when a `debug_nans` block is open here, outside a backward rule."""
    state = ACTIVE.get()
    if state is not None and not _IN_RULE.get():
        check_forward(state, name, out)


def user_line() -> str:
    """``file:line: code`` of the innermost stack frame outside tapegrad."""
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(_PACKAGE_DIR):
            return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return "<unknown>"  # pragma: no cover - a tapegrad op is always called from somewhere


def check_forward(state: AnomalyState, name: str, out: Tensor) -> None:
    """Raise if ``out`` holds a NaN or an infinity; else remember where it was made."""
    where = user_line()
    _raise_if_not_finite(name, out, "forward pass", where)
    state.origins[id(out)] = where


def check_backward(
    state: AnomalyState, name: str, out: Tensor, grads: tuple[Tensor | None, ...]
) -> None:
    """Raise if a cotangent from ``name``'s rule holds a NaN or an infinity."""
    for i, g in enumerate(grads):
        if g is not None:
            where = state.origins.get(id(out), "<recorded before debug_nans() was on>")
            _raise_if_not_finite(name, g, f"backward pass (cotangent of input {i})", where)


def _raise_if_not_finite(name: str, t: Tensor, phase: str, where: str) -> None:
    if t.dtype.kind not in "fc":
        return
    xp_isnan = t.data != t.data
    if bool(xp_isnan.any()):
        kind = "nan"
    elif bool((abs(t.data) == float("inf")).any()):
        kind = "inf"
    else:
        return
    raise FloatingPointError(f"`{name}` produced {kind} in its {phase}, called at {where}")
