"""The transformations, as optax's ``transform.py``: ``scale_by_*``, ``trace``, and their states.

Each function here returns a `Transform` (see ``_base.py``) whose state is a
frozen record defined beside it. A new one (say ``scale_by_rms``) goes here,
written as `scale_by_adam` is: validate the hyperparameters once, then in
``update_leaves`` a recorded path in tapegrad ops (`recording`), and a raw
path that runs an array-level update through `map_packed` (``_packing.py``).
Compose it into an optimizer in ``_alias.py``.

Will the replay's passes still recognise the update? They recognise NumPy
ufunc calls on whole packed buffers, in the sequence `_adam_arrays` uses: a
fresh result first, then in-place ufuncs into it, ending with the one that
reads the old state for the last time (``m2 = g - m; m2 *= c; m2 += m``). That
last call is then computed in the donated old state's memory, and other
results in buffers that are already dead. An update written that way (and
RMSProp's ``v2 = g * g; v2 -= v; v2 *= 1 - decay; v2 += v`` is) is recognised;
any other NumPy sequence replays bit for bit too, but allocates its results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np

from .. import _tree
from .._arrays._backend import Array, array_module
from .._core._math import sqrt, where
from .._core._tensor import Tensor, wrap
from ._base import Hyper, Params, Transform, Updates, check_tensors, leaves_matching, recording
from ._packing import map_packed, zeros_like_flat
from ._schedule import Schedule, as_schedule, tensor_value


def hyper_as(value: Hyper, dtype: Any) -> Any:
    """A hyperparameter for the recorded path: a Tensor cast (differentiably) to ``dtype``.

    A Python number is returned as it is: NumPy rounds it to the array's dtype,
    and a cast Tensor rounds the same way, so both paths see the same bits.
    """
    return value.astype(dtype) if isinstance(value, Tensor) else value


def positive(op: str, name: str, value: Hyper) -> float:
    """Validate a hyperparameter that must be a positive number (or a 0-d Tensor holding one).

    Returns its value as a Python float, for the raw path.
    """
    if isinstance(value, Tensor):
        value = tensor_value(op, name, value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"`{op}`: {name} must be a positive number, got {value!r}")
    return float(value)


def fraction(op: str, name: str, value: Hyper) -> float:
    """Validate a decay rate in ``[0, 1)`` (or a 0-d Tensor holding one); returns it as a float."""
    if isinstance(value, Tensor):
        value = tensor_value(op, name, value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"`{op}`: {name} must be in [0, 1), got {value!r}")
    return float(value)



@attrs.frozen
class AdamState:
    """Adam's state: the step count and both moment estimates (pytrees like the params).

    ``step`` is a Tensor holding a 0-d int64 array, not a Python int, so that a
    traced step (`tapegrad.replay`) takes it as data rather than as a constant.
    """

    step: Tensor
    m: Updates
    v: Updates


def _zero_count(params: Params) -> Tensor:
    """A step count of 0: a 0-d int64 array on the device of the first parameter.

    The count is data, not a Python int, so that a traced step (`tapegrad.replay`)
    takes it as an input; a Python int would be frozen into the trace as a constant.
    """
    tensors = [x for x in _tree.leaves(params) if isinstance(x, Tensor)]
    xp = array_module(tensors[0].data) if tensors else np
    return Tensor(xp.zeros((), dtype=np.int64))


def _count_data(op: str, what: str, count: Any) -> Any:
    """The array of a step count from init(), checked by type only: its value is never read."""
    if not isinstance(count, Tensor):
        raise TypeError(
            f"`{op}`: the step count ({what}) must be a Tensor made by init(), got "
            f"{type(count).__name__}"
        )
    return count.data


def _next_count(count: Any) -> Tensor:
    """``count + 1`` as a 0-d array, computed by NumPy alone (no ``int()``, no ``if``)."""
    # `wrap` turns the NumPy scalar that arithmetic on a 0-d array returns back into an array.
    return wrap(count + 1)


def _in_dtype(value: Any, dtype: np.dtype[Any], negate: bool = False) -> Any:
    """``value`` (or ``-value``) as a factor that keeps arrays of ``dtype`` in ``dtype``.

    ``value`` is a Python int or float, a NumPy scalar or a 0-d array, possibly
    traced (see `_rate`). A Python number is weakly typed under NEP 50, so
    NumPy rounds it to the array's dtype itself: it is returned as it is. A
    NumPy float64 scalar or 0-d array is strongly typed, and float32 updates
    multiplied by it would come out float64; so it is rounded to ``dtype``
    first, once, which gives the bits NumPy's rounding of the equal Python
    float gives. ``astype``, unlike ``float()`` or ``np.asarray``, never asks
    for the value, so a traced count stays data.
    """
    # `type() in`, not isinstance: np.float64 is a subclass of float, but strongly typed.
    if type(value) in (int, float):
        return -value if negate else value
    rounded = value.astype(dtype)
    return -rounded if negate else rounded


def _in_each_dtype(value: Any, negate: bool = False) -> Callable[[np.dtype[Any]], Any]:
    """`_in_dtype` of ``value`` for any dtype asked, computed once per dtype.

    Leaf by leaf, most leaves share a dtype; on a GPU each rounding is a kernel launch.
    """
    rounded: dict[np.dtype[Any], Any] = {}

    def in_dtype(dtype: np.dtype[Any]) -> Any:
        if dtype not in rounded:
            rounded[dtype] = _in_dtype(value, dtype, negate)
        return rounded[dtype]

    return in_dtype


def _zeros_like(params: Params) -> Updates:
    leaves, treedef = _tree.flatten(params)
    check_tensors("init", "parameters", leaves)
    shared = zeros_like_flat(leaves)
    if shared is not None:
        return treedef.unflatten(shared)
    return treedef.unflatten(Tensor(array_module(p.data).zeros_like(p.data)) for p in leaves)


def _correction(b: Hyper, step: Any) -> Callable[[np.dtype[Any]], Any]:
    """Adam's bias correction ``1 / (1 - b**step)`` for the 0-d array ``step``, by dtype.

    For a number ``b`` (the raw path, and the recorded one for a constant),
    NumPy computes it in float64 from the array, as Python did from an int
    step, and it is then rounded once to the dtype asked for. A Tensor ``b``
    (recorded path only) gives a Tensor, computed in its own dtype (float64
    for a float64 hyperparameter, as NumPy computes it from a Python float)
    and then cast.
    """
    if not isinstance(b, Tensor):
        return _in_each_dtype(1.0 / (1.0 - b**step))
    correction = 1.0 / (1.0 - b**step)
    return lambda dtype: correction.astype(dtype)


def _adam_arrays(
    g: Any, m: Any, v: Any, b1: float, b2: float, eps: float, m_scale: Any, v_scale: Any
) -> tuple[Any, Any, Any]:
    """New moments and Adam's direction, in fresh arrays, with as few passes as we can.

    ``m + (1 - b1)(g - m)`` is the seed's ``b1 m + (1 - b1) g`` rearranged to
    need no temporary; the division by ``sqrt(v_hat) + eps`` is the seed's.
    ``m_scale`` and ``v_scale`` are the bias corrections of `_correction`,
    already in the arrays' dtype. The arrays must have at least one dimension
    (`map_packed` passes 1-d ones): on 0-d arrays NumPy returns scalars, which
    ``out=`` cannot take. The sequence is the one the replay's passes
    recognise (see the module docstring).
    """
    xp = array_module(g)
    m2 = g - m
    m2 *= 1.0 - b1
    m2 += m
    v2 = g * g
    v2 -= v
    v2 *= 1.0 - b2
    v2 += v
    direction = v2 * v_scale
    xp.sqrt(direction, out=direction)
    direction += eps
    xp.divide(m2, direction, out=direction)
    direction *= m_scale
    return m2, v2, direction


def _sqrt_or_zero(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0``, with derivative 0 rather than inf where ``x == 0``.

    Adam's second moment is exactly 0 where every gradient so far was 0 (a
    dead unit, an unused embedding row); there the first moment is 0 too, and
    the plain rule would give ``0 * inf = nan`` for the whole meta-gradient.
    ``sqrt(v)`` there is ``|g| * c``, whose symmetric derivative is 0. The
    inner `where` keeps the unused branch harmless (see `tapegrad.where`).
    """
    positive_ = x > 0
    return where(positive_, sqrt(where(positive_, x, 1.0)), 0.0)


def _adam_recorded(
    grads: list[Tensor], ms: list[Tensor], vs: list[Tensor], b1: Hyper, b2: Hyper, eps: Hyper,
    step: Any,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """`_adam_arrays` in tapegrad ops, leaf by leaf, for a recording tape.

    The same operations in the same order (a sum's operands swapped, which
    is exact), so the values are the raw path's. Any hyperparameter given as
    a Tensor is differentiated.
    """
    m_scale, v_scale = _correction(b1, step), _correction(b2, step)
    keep1, keep2 = 1.0 - b1, 1.0 - b2
    out, new_m, new_v = [], [], []
    for g, m, v in zip(grads, ms, vs):
        dt = g.dtype
        m2 = m + (g - m) * hyper_as(keep1, dt)
        v2 = v + (g * g - v) * hyper_as(keep2, dt)
        direction = m2 / (_sqrt_or_zero(v2 * v_scale(dt)) + hyper_as(eps, dt)) * m_scale(dt)
        out.append(direction)
        new_m.append(m2)
        new_v.append(v2)
    return out, new_m, new_v


def scale_by_adam(b1: Hyper = 0.9, b2: Hyper = 0.999, eps: Hyper = 1e-8) -> Transform[AdamState]:
    """Turn gradients into Adam's direction ``m_hat / (sqrt(v_hat) + eps)``.

    The moments and bias corrections follow Kingma & Ba, and the seed's Adam,
    operation for operation. A hyperparameter may be a 0-d Tensor, which a
    recording tape differentiates.
    """
    given = (b1, b2, eps)  # Tensors stay Tensors for the recorded path
    b1 = fraction("scale_by_adam", "b1", b1)
    b2 = fraction("scale_by_adam", "b2", b2)
    eps = positive("scale_by_adam", "eps", eps)

    def init(params: Params) -> AdamState:
        return AdamState(_zero_count(params), _zeros_like(params), _zeros_like(params))

    def update_leaves(
        grads: list[Tensor], state: AdamState, params: Params, treedef: _tree.TreeDef
    ) -> tuple[list[Tensor], AdamState]:
        if not isinstance(state, AdamState):
            raise TypeError(f"`adam`: expected an AdamState from init(), got {type(state).__name__}")
        check_tensors("adam", "gradients", grads)
        ms = leaves_matching("adam", "first moments (state.m)", state.m, treedef, grads)
        vs = leaves_matching("adam", "second moments (state.v)", state.v, treedef, grads)
        step = _next_count(_count_data("adam", "state.step", state.step))
        if recording():  # differentiable, leaf by leaf
            out, new_m, new_v = _adam_recorded(grads, ms, vs, *given, step.data)
            return out, AdamState(step, treedef.unflatten(new_m), treedef.unflatten(new_v))
        m_scale, v_scale = _correction(b1, step.data), _correction(b2, step.data)

        def adam_arrays(g: Array, m: Array, v: Array) -> tuple[Array, Array, Array]:
            return _adam_arrays(g, m, v, b1, b2, eps, m_scale(g.dtype), v_scale(g.dtype))

        new_m, new_v, out = map_packed(adam_arrays, grads, ms, vs)
        return out, AdamState(step, treedef.unflatten(new_m), treedef.unflatten(new_v))

    return Transform(init, update_leaves)


@attrs.frozen
class ScaleState:
    """The step count, for learning-rate schedules: a Tensor holding a 0-d int64 array."""

    count: Tensor


def _rate(schedule: Schedule, count: Any, keep_tensor: bool = False) -> Any:
    """The schedule's rate at ``count``, as it returned it (never converted with ``float()``).

    A Tensor rate gives its array, unless ``keep_tensor`` (for a recording tape).
    """
    rate = schedule(count)
    # A schedule written with tapegrad's own ops returns a Tensor; NumPy wants its array.
    if isinstance(rate, Tensor):
        return rate if keep_tensor else rate.data
    if type(rate) not in (int, float) and not hasattr(rate, "astype"):
        raise TypeError(
            "`scale_by_learning_rate`: a schedule must return a Python number, a NumPy scalar, "
            f"a 0-d array or a 0-d Tensor, got {type(rate).__name__}"
        )
    return rate


def _negated(rate: Any) -> Callable[[np.dtype[Any]], Any]:
    """``-rate`` as a factor for updates of each dtype asked, for both paths.

    A Tensor rate (recorded path only: a learning rate being meta-learned) is
    cast with the differentiable `astype`; anything else is `_in_each_dtype`'s
    constant, rounded once per dtype.
    """
    if isinstance(rate, Tensor):
        return lambda dtype: -rate.astype(dtype)
    return _in_each_dtype(rate, negate=True)


def scale_by_learning_rate(lr: float | Schedule | Tensor) -> Transform[ScaleState]:
    """Multiply updates by ``-lr`` (a number, a 0-d Tensor or a schedule of the step count).

    A schedule is called with the count as a 0-d integer array; it may return
    a Python float, a NumPy scalar, a 0-d array or a 0-d Tensor. Under a
    recording tape, gradients flow into a Tensor rate.
    """
    schedule = as_schedule("scale_by_learning_rate", lr)

    def init(params: Params) -> ScaleState:
        return ScaleState(_zero_count(params))

    def update_leaves(
        leaves: list[Tensor], state: ScaleState, params: Params, treedef: _tree.TreeDef
    ) -> tuple[list[Tensor], ScaleState]:
        count = _count_data("scale_by_learning_rate", "state.count", state.count)
        if recording():  # differentiable, also in a Tensor rate (cast to each update's dtype)
            factor = _negated(_rate(schedule, count, keep_tensor=True))
            return [u * factor(u.dtype) for u in leaves], ScaleState(_next_count(count))
        factor = _negated(_rate(schedule, count))
        (scaled,) = map_packed(lambda u: (u * factor(u.dtype),), leaves)
        return scaled, ScaleState(_next_count(count))

    return Transform(init, update_leaves)


@attrs.frozen
class TraceState:
    """The momentum buffer of `trace` (a pytree like the params)."""

    trace: Updates


def trace(momentum: Hyper, nesterov: bool = False) -> Transform[TraceState]:
    """Momentum: ``t = momentum * t + g``; the update is ``t`` (or ``g + momentum * t``).

    ``momentum`` may be a 0-d Tensor, which a recording tape differentiates.
    """
    given = momentum  # a Tensor stays a Tensor for the recorded path
    momentum = fraction("trace", "momentum", momentum)

    def init(params: Params) -> TraceState:
        return TraceState(_zeros_like(params))

    def update_leaves(
        grads: list[Tensor], state: TraceState, params: Params, treedef: _tree.TreeDef
    ) -> tuple[list[Tensor], TraceState]:
        check_tensors("sgd", "gradients", grads)
        prev = leaves_matching("sgd", "momentum buffers", state.trace, treedef, grads)
        if recording():  # differentiable, with the same operations as below
            new = [hyper_as(given, g.dtype) * t + g for g, t in zip(grads, prev)]
            out = [g + hyper_as(given, g.dtype) * t for g, t in zip(grads, new)] if nesterov else new
            return out, TraceState(treedef.unflatten(new))
        # wrap(): arithmetic on 0-d arrays gives NumPy scalars, and a Tensor holds an array.
        new = [wrap(momentum * t.data + g.data) for g, t in zip(grads, prev)]
        if nesterov:
            out = [wrap(g.data + momentum * t.data) for g, t in zip(grads, new)]
        else:
            out = new
        return out, TraceState(treedef.unflatten(new))

    return Transform(init, update_leaves)
