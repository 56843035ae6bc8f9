"""Ops that move values without changing them: shapes, joins and indexing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._arrays._backend import array_module, device_of, to_device
from .._arrays._backend import scatter_add as _scatter_add_raw
from .._arrays._backend import zeros_for
from ._dispatch import as_tensor, mixed_floats
from ._primitive import Grads, primitive
from ._record import emit
from ._tensor import Index, Tensor, TensorLike
from .._arrays._traced import Traced, owned_constant, traced_in

Axes = int | tuple[int, ...] | None


def _normalize_axes(axis: Axes, ndim: int, op: str) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if type(axis) is int and 0 <= axis < ndim:  # the common case, checked cheaply
        return (axis,)
    if ndim == 0 and isinstance(axis, int) and axis in (0, -1):
        return ()  # NumPy lets a 0-d array take axis 0 or -1, and reduces nothing
    axes = (axis,) if isinstance(axis, int) else tuple(range(ndim)) if axis is None else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"`{op}`: axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"`{op}`: repeated axis in {axis}")
    return tuple(out)


# ---- reshape and friends --------------------------------------------------------
def reshape(x: TensorLike, shape: Sequence[int]) -> Tensor:
    """The same values in a new shape (one entry may be -1)."""
    t = as_tensor(x, "reshape")
    target = tuple(int(s) for s in shape)
    try:
        result = t.data.reshape(target)
    except ValueError:
        raise ValueError(
            f"`reshape`: cannot reshape a tensor of shape {t.shape} ({t.size} elements) "
            f"into shape {target}"
        ) from None
    return emit(RESHAPE, (t,), result)


RESHAPE = primitive("reshape", lambda g, out, inputs, p, needs: (reshape(g, inputs[0].shape),))


def squeeze(x: TensorLike, axis: Axes = None) -> Tensor:
    """Drop axes of length one (all of them by default)."""
    t = as_tensor(x, "squeeze")
    if axis is None:
        axes = tuple(i for i, s in enumerate(t.shape) if s == 1)
    else:
        axes = _normalize_axes(axis, t.ndim, "squeeze")
        for a in axes:
            if t.shape[a] != 1:
                raise ValueError(
                    f"`squeeze`: axis {a} has length {t.shape[a]}, not 1, in shape {t.shape}"
                )
    return reshape(t, tuple(s for i, s in enumerate(t.shape) if i not in axes))


def expand_dims(x: TensorLike, axis: int | tuple[int, ...]) -> Tensor:
    """Insert axes of length one at ``axis``."""
    t = as_tensor(x, "expand_dims")
    axes = _normalize_axes(axis, t.ndim + (1 if isinstance(axis, int) else len(axis)), "expand_dims")
    shape = list(t.shape)
    for a in sorted(axes):
        shape.insert(a, 1)
    return reshape(t, shape)


def transpose(x: TensorLike, axes: Sequence[int] | None = None) -> Tensor:
    """Permute the axes; by default reverse them."""
    t = as_tensor(x, "transpose")
    if axes is None and t.data.ndim == 2:  # the common case: a matrix's transpose
        return emit(TRANSPOSE, (t,), t.data.T, (1, 0))
    perm = tuple(range(t.ndim))[::-1] if axes is None else tuple(a % max(t.ndim, 1) for a in axes)
    in_range = axes is None or all(-t.ndim <= a < t.ndim for a in axes)
    if not in_range or sorted(perm) != list(range(t.ndim)):
        raise ValueError(
            f"`transpose`: axes {tuple(axes or ())} are not a permutation of the "
            f"{t.ndim} axes of a tensor of shape {t.shape}"
        )
    return emit(TRANSPOSE, (t,), t.data.transpose(perm), perm)


TRANSPOSE = primitive(
    "transpose", lambda g, out, inputs, perm, needs: (transpose(g, tuple(np.argsort(perm))),)
)


def permute(x: TensorLike, axes: Sequence[int]) -> Tensor:
    """Permute the axes (PyTorch's name for `transpose` with axes)."""
    return transpose(x, axes)


def swapaxes(x: TensorLike, a: int, b: int) -> Tensor:
    """Exchange two axes."""
    t = as_tensor(x, "swapaxes")
    if t.data.ndim == 2 and {a, b} in ({0, 1}, {-1, -2}, {0, -1}, {-2, 1}) and a != b:
        return transpose(t)
    perm = list(range(t.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    return transpose(t, perm)


def broadcast_to(x: TensorLike, shape: Sequence[int]) -> Tensor:
    """Repeat ``x`` along new or length-one axes to reach ``shape``."""
    t = as_tensor(x, "broadcast_to")
    target = tuple(shape)
    try:
        result = array_module(t.data).broadcast_to(t.data, target)
    except ValueError:
        raise ValueError(
            f"`broadcast_to`: a tensor of shape {t.shape} cannot be broadcast to {target}"
        ) from None
    return emit(BROADCAST_TO, (t,), result)


# The tape sums the cotangent back to the input's shape.
BROADCAST_TO = primitive("broadcast_to", lambda g, out, inputs, p, needs: (g,))


# ---- joining ---------------------------------------------------------------------
def _join_inputs(tensors: Sequence[TensorLike], op: str) -> tuple[Tensor, ...]:
    if isinstance(tensors, Tensor) or not isinstance(tensors, Sequence) or not tensors:
        raise TypeError(f"`{op}`: expected a non-empty list or tuple of tensors")
    ts = tuple(as_tensor(t, op, "tensors") for t in tensors)
    if len({t.device for t in ts}) > 1:
        raise ValueError(f"`{op}`: tensors are on different devices; move them to one first")
    floats = sorted({str(t.dtype) for t in ts if t.dtype.kind == "f"})
    if len(floats) > 1:  # the promotion rule of `unify`: never widen silently
        raise mixed_floats(op, *floats[:2])
    if floats and any(t.dtype.kind in "iub" for t in ts):  # integers take the float dtype
        ts = tuple(Tensor(t.data.astype(floats[0])) if t.dtype.kind in "iub" else t for t in ts)
    return ts


def concatenate(tensors: Sequence[TensorLike], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    ts = _join_inputs(tensors, "concatenate")
    try:
        result = array_module(ts[0].data).concatenate([t.data for t in ts], axis=axis)
    except (ValueError, np.exceptions.AxisError):
        raise ValueError(
            f"`concatenate`: shapes {[t.shape for t in ts]} cannot be joined on axis {axis}; "
            "all other axes must match"
        ) from None
    return emit(CONCATENATE, ts, result, axis % ts[0].ndim)


def _concatenate_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], axis: Any, needs: tuple[bool, ...]) -> Grads:
    grads: list[Tensor | None] = []
    start = 0
    lead = (slice(None),) * axis
    for t, need in zip(inputs, needs):
        stop = start + t.shape[axis]
        grads.append(getitem(g, (*lead, slice(start, stop))) if need else None)
        start = stop
    return grads


CONCATENATE = primitive("concatenate", _concatenate_vjp)


def stack(tensors: Sequence[TensorLike], axis: int = 0) -> Tensor:
    """Join tensors of one shape along a new axis."""
    ts = _join_inputs(tensors, "stack")
    try:
        result = array_module(ts[0].data).stack([t.data for t in ts], axis=axis)
    except (ValueError, np.exceptions.AxisError):
        raise ValueError(
            f"`stack`: shapes {[t.shape for t in ts]} cannot be stacked on axis {axis}; "
            "all tensors must have the same shape"
        ) from None
    return emit(STACK, ts, result, axis % (ts[0].ndim + 1))


def _stack_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], axis: Any, needs: tuple[bool, ...]) -> Grads:
    lead = (slice(None),) * axis
    return [getitem(g, (*lead, i)) if need else None for i, need in enumerate(needs)]


STACK = primitive("stack", _stack_vjp)


# ---- indexing -------------------------------------------------------------------
def _raw_index(index: Index, device: str) -> tuple[Any, bool]:
    """Turn tensors in an index into arrays; say whether any part is advanced.

    Boolean masks become integer arrays (``mask.nonzero()``), so the backward
    scatter only ever sees integers.
    """
    parts = index if isinstance(index, tuple) else (index,)
    out: list[Any] = []
    advanced = False
    for part in parts:
        if isinstance(part, Tensor):
            part = part.data
        if isinstance(part, list):
            part = np.asarray(part)
        if isinstance(part, np.ndarray) and device == "cuda":
            part = to_device(part, "cuda")  # a host index (list or array) is written for any device
        if hasattr(part, "dtype") and getattr(part, "ndim", 0) >= 0 and not isinstance(part, np.generic):
            if device_of(part) != device:
                raise ValueError(
                    f"`getitem`: the index is on {device_of(part)} but the tensor is on {device}"
                )
            if part.dtype == np.bool_:
                out.extend(part.nonzero())
                advanced = True
                continue
            if part.dtype.kind not in "iu":
                raise TypeError(
                    f"`getitem`: index arrays must be integer or boolean, got dtype {part.dtype}"
                )
            advanced = True
        elif isinstance(part, float):
            raise TypeError("`getitem`: a float is not a valid index; use an int")
        out.append(part)
    return (tuple(out) if isinstance(index, tuple) or len(out) != 1 else out[0]), advanced


def getitem(x: TensorLike, index: Index) -> Tensor:
    """``x[index]`` with NumPy's rules: slices, ints, ``None``, ``...``, integer arrays, masks.

    Its gradient scatters back, and repeated indices accumulate.
    """
    t = as_tensor(x, "getitem")
    idx, advanced = _raw_index(index, t.device)
    data: Any = t.data
    if not isinstance(data, Traced) and (owner := traced_in(idx)) is not None:
        data = owned_constant(data, owner)  # under replay: a constant table at traced indices
    try:
        result = data[idx]
    except IndexError as exc:
        raise IndexError(f"`getitem`: {exc} (tensor shape {t.shape})") from None
    return emit(GETITEM, (t,), result, (idx, advanced))


def _getitem_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    idx, advanced = p
    return (scatter_add(g, idx, inputs[0].shape, advanced),)


GETITEM = primitive("getitem", _getitem_vjp)


def scatter_add(values: Tensor, index: Index, shape: tuple[int, ...], advanced: bool = True) -> Tensor:
    """Zeros of ``shape`` with ``values`` added at ``index`` (repeats accumulate).

    This is the transpose of `getitem`, and its own rule is `getitem` again.
    """
    result = zeros_for(shape, values.dtype, values.data, index)
    if advanced:
        _scatter_add_raw(result, index, values.data)
    else:  # basic indices never repeat an element, so plain assignment is exact
        result[index] = values.data
    return emit(SCATTER_ADD, (values,), result, (index, advanced))


def _scatter_add_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    idx, _ = p
    return (getitem(g, idx),)


SCATTER_ADD = primitive("scatter_add", _scatter_add_vjp)
