"""One flat buffer for many leaves, the way fused optimizers update parameters.

An optimizer step over six small arrays costs six times the Python calls of
one step over their concatenation. So the optimizer keeps its outputs (new
parameters, moments) as views into one fresh flat buffer per step. When the
next step receives leaves that are exactly such views, in order, it uses
their buffer directly, with no copy; anything else is concatenated once.
Callers still see ordinary tensors shaped like their parameters, and no
buffer is ever written after it has been handed out.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._tensor import Tensor

# For each flat buffer we split, weak references to it and to the views we
# made of it, in order. A leaf list whose arrays are exactly those views (an
# identity check, so it cannot be fooled by other views of the same memory)
# is that buffer. Entries go when the buffer dies.
_LAYOUTS: dict[int, tuple[weakref.ref[np.ndarray], tuple[weakref.ref[np.ndarray], ...]]] = {}


def _forget(key: int) -> Any:
    return lambda _: _LAYOUTS.pop(key, None)


def flat_of(leaves: Sequence[Tensor]) -> np.ndarray | None:
    """The leaves' values as one flat array, or ``None`` if they can't share one.

    Leaves can share one buffer when they are all host arrays of one dtype.
    """
    if not leaves:
        return None
    first = leaves[0].data
    if type(first) is not np.ndarray:
        return None
    dtype = first.dtype
    for leaf in leaves:
        if type(leaf.data) is not np.ndarray or leaf.data.dtype != dtype:
            return None
    base = first.base
    entry = _LAYOUTS.get(id(base)) if base is not None else None
    if entry is not None and entry[0]() is base and len(entry[1]) == len(leaves):
        for ref, leaf in zip(entry[1], leaves):
            if ref() is not leaf.data:
                break
        else:
            return base
    return np.concatenate([leaf.data.reshape(-1) for leaf in leaves])


def split_like(flat: np.ndarray, leaves: Sequence[Tensor]) -> list[Tensor]:
    """Views of ``flat`` with the shapes of ``leaves``, in order."""
    out = []
    views = []
    start = 0
    for leaf in leaves:
        d = leaf.data
        stop = start + d.size
        view = flat[start:stop].reshape(d.shape)
        views.append(weakref.ref(view))
        out.append(Tensor(view))
        start = stop
    key = id(flat)
    _LAYOUTS[key] = (weakref.ref(flat, _forget(key)), tuple(views))
    return out


def zeros_like_flat(leaves: Sequence[Tensor]) -> list[Tensor] | None:
    """Zeros shaped like ``leaves``, as views of one buffer (``None`` if they can't share one)."""
    if not leaves or any(type(x.data) is not np.ndarray for x in leaves):
        return None
    dtype = leaves[0].dtype
    if any(x.dtype != dtype for x in leaves):
        return None
    return split_like(np.zeros(sum(x.size for x in leaves), dtype), leaves)


def fresh(like: Any) -> Any:
    """An uninitialised array like ``like`` (which the caller then fills)."""
    return np.empty_like(like)
