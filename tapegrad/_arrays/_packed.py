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

from ._backend import HOST_ARRAYS
from .._core._tensor import Tensor
from ._traced import Traced

# For each flat buffer we split: a weak reference to it, weak references to
# the views we made of it, in order, and the views' shapes. A leaf list whose
# arrays are exactly those views (an identity check, so it cannot be fooled by
# other views of the same memory) is that buffer. Entries go when the buffer dies.
Layout = tuple[tuple[int, ...], ...]
_LAYOUTS: dict[int, tuple[weakref.ref[Any], tuple[weakref.ref[Any], ...], Layout]] = {}


def _forget(key: int) -> Any:
    return lambda _: _LAYOUTS.pop(key, None)


def _register(flat: Any, views: tuple[Any, ...], layout: Layout) -> None:
    key = id(flat)
    _LAYOUTS[key] = (weakref.ref(flat, _forget(key)), tuple(weakref.ref(v) for v in views), layout)


def flat_run(arrays: Sequence[Any], start: int) -> tuple[Any, Layout] | None:
    """The buffer whose views, in order, begin ``arrays[start:]``, and their shapes.

    `tapegrad.replay` passes such a buffer to a replay instead of its views,
    so that the replay need not concatenate them again.
    """
    base = arrays[start].base
    entry = _LAYOUTS.get(id(base)) if base is not None else None
    if entry is None or entry[0]() is not base:
        return None
    refs = entry[1]
    if start + len(refs) > len(arrays):
        return None
    for k, ref in enumerate(refs):
        if ref() is not arrays[start + k]:
            return None
    return base, entry[2]


def flat_of(leaves: Sequence[Tensor]) -> Any:
    """The leaves' values as one flat array, or ``None`` if they can't share one.

    Leaves can share one buffer when they are all host arrays of one dtype.
    """
    if not leaves:
        return None
    arrays = [leaf.data for leaf in leaves]
    dtype = arrays[0].dtype
    for array in arrays:
        if type(array) not in HOST_ARRAYS or array.dtype != dtype:
            return None
    run = flat_run(arrays, 0) if arrays[0].base is not None else None
    if run is not None and len(run[1]) == len(arrays):
        return run[0]
    return np.concatenate([array.reshape(-1) for array in arrays])


def split_like(flat: Any, leaves: Sequence[Tensor]) -> list[Tensor]:
    """Views of ``flat`` with the shapes of ``leaves``, in order."""
    return [Tensor(v) for v in split(flat, tuple(leaf.data.shape for leaf in leaves))]


def split(flat: Any, layout: Layout) -> list[Any]:
    """Views of ``flat`` with the shapes in ``layout``, in order, registered as its layout."""
    if type(flat) is Traced:
        # One recorded call rather than a slice and a reshape per view: a replay
        # that writes its results into a buffer it was given (a donated one) then
        # hands back that buffer's registered views instead of slicing anew.
        views = list(flat.recording.record("call", views_of, (flat, layout), {}, lambda a, k: views_of(*a)))
        # The traced arrays are registered too, so that the rest of the trace
        # finds them as one buffer, as an eager step finds the real ones.
        _register(flat, tuple(views), layout)
        return views
    return list(views_of(flat, layout))


def views_of(flat: Any, layout: Layout) -> tuple[Any, ...]:
    """`split`'s views: those already registered for ``flat`` and ``layout`` if alive, else new ones.

    Registered views are the same memory with the same shapes, so returning
    them gives the same values as slicing again, for a sixth of the cost.
    """
    entry = _LAYOUTS.get(id(flat))
    if entry is not None and entry[0]() is flat and entry[2] == layout:
        views = tuple(ref() for ref in entry[1])
        # A view's shape can be reassigned in place; such a view is no longer ours.
        if all(v is not None and v.shape == shape for v, shape in zip(views, layout)):
            return views
    made = []
    start = 0
    for shape in layout:
        stop = start + _size(shape)
        made.append(flat[start:stop].reshape(shape))
        start = stop
    _register(flat, tuple(made), layout)
    return tuple(made)


def _size(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


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
