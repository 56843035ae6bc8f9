"""Buffer reuse for a replay: write a ufunc's result into memory that is already dead.

Eagerly, every op returns a fresh array, and a functional optimizer step
allocates a new buffer for each moment, the direction and the parameters. A
replay knows the whole program, so, as XLA's buffer assignment does, it can
hand an op the memory of an array nobody will read again, of the same shape
and dtype, through ``out=``. Fewer live buffers mean a lower peak and warmer
caches; the values are the same, because a ufunc writes each element from
the same inputs either way.

Only plain ufunc calls are rewritten. An elementwise ufunc may also write
over an operand that dies at that very call (NumPy handles the exact
overlap); a generalised ufunc such as ``matmul`` only takes memory that died
before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from ._traced import Container, Instruction, Ref, slots_touched


def _ufunc_of(ins: Instruction) -> np.ufunc | None:
    """The ufunc of a plain ``ufunc(...)`` call with one new result, else ``None``."""
    if ins.kind != "call" or ins.kwargs or len(ins.outs) != 1 or ins.unpack:
        return None
    owner = getattr(ins.fn, "__self__", None)
    if isinstance(owner, np.ufunc) and ins.fn.__name__ == "__call__" and owner.nout == 1:
        return owner
    return None


def reuse_buffers(
    instructions: Sequence[Instruction], values: Sequence[Any], fixed: set[int]
) -> list[Instruction]:
    """``instructions`` with ufunc results written into dead buffers where one fits.

    ``values`` are the trace's values by slot; ``fixed`` are slots whose
    memory must never be reused (the inputs and the outputs). An output may
    itself be written into a dead buffer, which it then keeps.
    """
    # Group slots by the memory they live in: a view belongs to its base.
    owner_slot = {id(v): s for s, v in enumerate(values) if isinstance(v, np.ndarray) and v.base is None}
    group_of: dict[int, int] = {}
    for s, v in enumerate(values):
        if isinstance(v, np.ndarray):
            root = v if v.base is None else v.base
            if id(root) in owner_slot:
                group_of[s] = owner_slot[id(root)]
    pinned = {group_of[s] for s in fixed if s in group_of}
    death: dict[int, int] = {}
    for i, ins in enumerate(instructions):
        for s in slots_touched(ins):
            if s in group_of:
                death[group_of[s]] = i

    physical: dict[int, int] = {}  # group -> the slot whose memory it now uses
    free: dict[tuple[Any, ...], list[int]] = {}
    dying_at: dict[int, list[int]] = {}
    for g, d in death.items():
        if g not in pinned and _reusable(values[g]):
            dying_at.setdefault(d, []).append(g)
    rewritten = []
    for i, ins in enumerate(instructions):
        ufunc = _ufunc_of(ins)
        out = ins.outs[0] if ufunc is not None else -1
        value = values[out] if out >= 0 else None
        # Buffers whose last reader is this op: an elementwise op may overwrite them.
        dying = [g for g in dying_at.get(i, ()) if g != out]
        if ufunc is not None and ufunc.signature is None:
            for g in dying:
                free.setdefault(_fit_key(values[g]), []).append(physical.get(g, g))
            dying = []
        if isinstance(value, np.ndarray) and _reusable(value):
            pool = free.get(_fit_key(value))
            if pool:
                buffer = pool.pop()
                physical[out] = buffer
                ins = attrs.evolve(ins, kwargs=(("out", Container(tuple, (Ref(buffer),))),), effect=True)
        rewritten.append(ins)
        for g in dying:
            free.setdefault(_fit_key(values[g]), []).append(physical.get(g, g))
    return rewritten


def _reusable(value: np.ndarray) -> bool:
    """Whether ``value`` owns plain C-ordered memory that an op could write its result into."""
    return value.base is None and value.flags.c_contiguous and value.flags.writeable


def _fit_key(value: Any) -> tuple[Any, ...]:
    return (value.shape, value.dtype)
