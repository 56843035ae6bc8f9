"""Reductions, and the numerically stable compositions built on them."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._dispatch import as_tensor
from ._math import exp, isfinite, log, logical_and, where
from ._primitive import Grads, primitive
from ._shape import Axes, _normalize_axes, broadcast_to, reshape
from ._record import emit, stop_gradient
from ._tensor import Tensor, TensorLike, wrap


def _keepdims_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def sum(x: TensorLike, axis: Axes = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (all axes by default)."""
    t = as_tensor(x, "sum")
    axes = _normalize_axes(axis, t.ndim, "sum")
    # One axis as an int, and keepdims only when asked: the replay writes a sum called with
    # axis alone straight into an optimizer's flat gradient (`write_into_concatenations` in
    # `_replay/_passes.py`), and its source then reads ``.sum(axis=0, out=...)``.
    along = axes[0] if len(axes) == 1 else axes
    summed = t.data.sum(axis=along, keepdims=True) if keepdims else t.data.sum(axis=along)
    return emit(SUM, (t,), summed, axes)


def _sum_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], axes: Any, needs: tuple[bool, ...]) -> Grads:
    shape = inputs[0].shape
    return (broadcast_to(reshape(g, _keepdims_shape(shape, axes)), shape),)


SUM = primitive("sum", _sum_vjp)


def mean(x: TensorLike, axis: Axes = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (all axes by default)."""
    t = as_tensor(x, "mean")
    axes = _normalize_axes(axis, t.ndim, "mean")
    count = int(np.prod([t.shape[a] for a in axes]))
    if count == 0:
        raise ValueError(f"`mean`: cannot take the mean of zero elements (shape {t.shape}, axis {axis})")
    return sum(t, axes, keepdims) * (1.0 / count)


def _extremum(name: str, x: TensorLike, axis: Axes, keepdims: bool) -> Tensor:
    t = as_tensor(x, name)
    axes = _normalize_axes(axis, t.ndim, name)
    if any(t.shape[a] == 0 for a in axes):
        raise ValueError(f"`{name}`: zero-size axis in shape {t.shape} has no {name}imum")
    fn = t.data.max if name == "max" else t.data.min
    return emit(MAX if name == "max" else MIN, (t,), fn(axis=axes, keepdims=keepdims), axes)


def _extremum_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], axes: Any, needs: tuple[bool, ...]) -> Grads:
    # Every element equal to the extremum gets an equal share, as in the seed.
    # A NaN is the extremum (NumPy propagates it): the NaN entries take the gradient.
    x = inputs[0]
    kshape = _keepdims_shape(x.shape, axes)
    top = out.data.reshape(kshape)
    hit = x.data == top
    if bool((top != top).any()):
        hit = hit | ((x.data != x.data) & (top != top))
    share = hit / hit.sum(axis=axes, keepdims=True)
    return (reshape(g, kshape) * Tensor(share.astype(g.dtype, copy=False)),)


def max(x: TensorLike, axis: Axes = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over ``axis``; tied maxima share the gradient evenly."""
    return _extremum("max", x, axis, keepdims)


def min(x: TensorLike, axis: Axes = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Minimum over ``axis``; tied minima share the gradient evenly."""
    return _extremum("min", x, axis, keepdims)


MAX = primitive("max", _extremum_vjp)
MIN = primitive("min", _extremum_vjp)


def argmax(x: TensorLike, axis: int | None = None) -> Tensor:
    """Indices of the maxima along ``axis`` (not differentiable)."""
    return wrap(as_tensor(x, "argmax").data.argmax(axis=axis))


def argmin(x: TensorLike, axis: int | None = None) -> Tensor:
    """Indices of the minima along ``axis`` (not differentiable)."""
    return wrap(as_tensor(x, "argmin").data.argmin(axis=axis))


# ---- stable compositions: no rules of their own -------------------------------------
def _shifted(t: Tensor, axis: Axes) -> tuple[Tensor, Tensor, Tensor | None]:
    """``t`` minus its maximum along ``axis``, that maximum, and the slices that are all -inf.

    The maximum is a constant (its gradient contributions cancel exactly). A
    slice whose maximum is not finite is handled without NaNs or warnings:
    with a +inf entry, the +inf entries become 0 and the others -inf (the
    limit as the +inf entries grow; the slice is saturated, so no gradient
    flows through it); with every entry -inf, nothing is subtracted, and the
    third result marks the slice (its ``sum(exp)`` is 0). NaN entries propagate.
    """
    m = stop_gradient(max(t, axis, keepdims=True))
    if bool(isfinite(m).data.all()):  # the common case: one subtraction
        return t - m, m, None
    shift = where(isfinite(m), m, 0.0)
    top = m == np.inf
    shifted = where(logical_and(top, t == np.inf), 0.0, where(top, -np.inf, t - shift))
    return shifted, m, m == -np.inf


def _log_sum_exp(shifted: Tensor, axis: Axes, empty: Tensor | None) -> Tensor:
    """``log(sum(exp(shifted)))`` along ``axis`` (kept); 0 in ``empty`` slices, for the caller to fill."""
    s = sum(exp(shifted), axis, keepdims=True)
    return log(s) if empty is None else log(where(empty, 1.0, s))


def logsumexp(x: TensorLike, axis: Axes = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``axis``, computed without overflow.

    The maximum is subtracted first and treated as a constant (its gradient
    contributions cancel exactly), so the gradient is ``softmax(x)``. A +inf
    entry gives +inf, and a slice of only -inf gives -inf (as PyTorch), both
    with a zero gradient and without NumPy warnings.
    """
    t = as_tensor(x, "logsumexp")
    shifted, m, empty = _shifted(t, axis)
    out = _log_sum_exp(shifted, axis, empty) + m  # an empty slice: 0 + -inf
    if keepdims:
        return out
    axes = _normalize_axes(axis, t.ndim, "logsumexp")
    return reshape(out, tuple(s for i, s in enumerate(t.shape) if i not in axes))


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """``x - logsumexp(x)`` along ``axis``: log-probabilities, stable for large inputs.

    A slice with +inf entries gives them log-probability ``-log(count)`` and
    the others -inf (the limit), with a zero gradient; a slice of only -inf
    has no distribution and gives NaN, with a zero gradient. Neither warns.
    """
    t = as_tensor(x, "log_softmax")
    # Subtract the maximum before anything else: `t - logsumexp(t)` would round
    # both terms at the scale of `t` and lose the digits of a float32 result.
    shifted, _, empty = _shifted(t, axis)
    out = shifted - _log_sum_exp(shifted, axis, empty)
    return out if empty is None else where(empty, np.nan, out)


def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """``exp(x) / sum(exp(x))`` along ``axis``, stable for large inputs.

    +inf entries share the probability evenly (the limit) and a slice of
    only -inf gives NaN, as in `log_softmax`.
    """
    return exp(log_softmax(x, axis))
