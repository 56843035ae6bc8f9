"""Recording: which tapes are active, and `emit`, by which every op records itself.

This is the half of the tape that the ops see, as HIPS autograd's ``tracer.py`` is the
half of its engine that ops see. A record is a plain tuple ``(primitive, inputs, output,
params)``, so recording an op costs one tuple and one list append per active tape. The
tapes active on this thread or async task live in a `ContextVar`, so concurrent training
loops never see each other's records. Differentiating the records is ``_tape.py``'s job.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, TypeAlias

import numpy as np

from . import _anomaly
from ._primitive import Primitive
from ._tensor import Tensor, wrap

Record: TypeAlias = tuple[Primitive, tuple[Tensor, ...], Tensor, Any]


class Recorder:
    """What an active tape is to the ops: the list that their records are appended to."""

    __slots__ = ("_records",)

    def __init__(self) -> None:
        self._records: list[Record] = []


_ACTIVE: ContextVar[tuple[Recorder, ...]] = ContextVar("tapegrad_active_tapes", default=())

#: The tapes recording on this thread or task, ``()`` when none. The ops ask this on every
#: call to decide whether to lift Python numbers for a tape, so it is the ContextVar's bound
#: ``get`` (about 20 ns), not a function around it (`is_recording`, about 50 ns).
active_tapes = _ACTIVE.get


def emit(prim: Primitive, inputs: tuple[Tensor, ...], result: Any, params: Any = None) -> Tensor:
    """Wrap an op's raw result in a tensor and record it on every active tape.

    Only floating and complex results are recorded: nothing can flow back
    through an integer or boolean value. Complex ones are kept only so that
    `gradient` can refuse a path through them instead of silently cutting it.
    """
    out = Tensor(result) if type(result) is np.ndarray else wrap(result)
    tapes = _ACTIVE.get()
    if tapes and out.data.dtype.kind in "fc":
        record = (prim, inputs, out, params)
        for tape in tapes:
            tape._records.append(record)
    if _anomaly.ACTIVE.get() is not None:
        _anomaly.check_forward_if_on(prim.name, out)
    return out


def is_recording() -> bool:
    """True when at least one tape is recording on this thread or task."""
    return bool(_ACTIVE.get())


def stop_gradient(x: Tensor) -> Tensor:
    """The same values, cut from every tape: no gradient flows back through it.

    >>> import tapegrad as tg
    >>> w = tg.tensor(3.0)
    >>> with tg.Tape() as tape:
    ...     y = w * tg.stop_gradient(w)
    >>> tape.gradient(y, w)
    Tensor(3., dtype=float32, device=cpu)
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"stop_gradient: expected a Tensor, got {type(x).__name__}")
    return Tensor(x.data)
