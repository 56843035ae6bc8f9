"""Adam and SGD, composed from small transformations as optax builds them."""

from __future__ import annotations

from typing import Any

import attrs

from .. import _tree
from .._backend import array_module
from .._tensor import Tensor
from ._flat import flat_of, split_like, zeros_like_flat
from ._schedule import as_schedule
from ._transform import (
    Params,
    Schedule,
    Transform,
    chain,
    check_tensors,
    fraction,
    leaves_matching,
    positive,
)


@attrs.frozen
class AdamState:
    """Adam's state: the step count and both moment estimates (pytrees like the params)."""

    step: int
    m: Any
    v: Any


def _zeros_like(params: Params) -> Any:
    leaves, treedef = _tree.flatten(params)
    check_tensors("init", "parameters", leaves)
    shared = zeros_like_flat(leaves)
    if shared is not None:
        return treedef.unflatten(shared)
    return treedef.unflatten(Tensor(array_module(p.data).zeros_like(p.data)) for p in leaves)


def _adam_arrays(
    g: Any, m: Any, v: Any, b1: float, b2: float, eps: float, step: int
) -> tuple[Any, Any, Any]:
    """New moments and Adam's direction, in fresh arrays, with as few passes as we can.

    ``m + (1 - b1)(g - m)`` is the seed's ``b1 m + (1 - b1) g`` rearranged to
    need no temporary; the division by ``sqrt(v_hat) + eps`` is the seed's.
    """
    xp = array_module(g)
    m2 = g - m
    m2 *= 1.0 - b1
    m2 += m
    v2 = g * g
    v2 -= v
    v2 *= 1.0 - b2
    v2 += v
    direction = v2 * (1.0 / (1.0 - b2**step))
    xp.sqrt(direction, out=direction)
    direction += eps
    xp.divide(m2, direction, out=direction)
    direction *= 1.0 / (1.0 - b1**step)
    return m2, v2, direction


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transform[AdamState]:
    """Turn gradients into Adam's direction ``m_hat / (sqrt(v_hat) + eps)``.

    The moments and bias corrections follow Kingma & Ba, and the seed's Adam,
    operation for operation.
    """
    b1 = fraction("scale_by_adam", "b1", b1)
    b2 = fraction("scale_by_adam", "b2", b2)
    eps = positive("scale_by_adam", "eps", eps)

    def init(params: Params) -> AdamState:
        return AdamState(0, _zeros_like(params), _zeros_like(params))

    def update_leaves(
        grads: list[Tensor], state: AdamState, params: Params, treedef: _tree.TreeDef
    ) -> tuple[list[Tensor], AdamState]:
        if not isinstance(state, AdamState):
            raise TypeError(f"`adam`: expected an AdamState from init(), got {type(state).__name__}")
        check_tensors("adam", "gradients", grads)
        ms = leaves_matching("adam", "first moments (state.m)", state.m, treedef, grads)
        vs = leaves_matching("adam", "second moments (state.v)", state.v, treedef, grads)
        step = state.step + 1
        flat_g = flat_of(grads)
        if flat_g is not None and flat_g.dtype == ms[0].dtype == vs[0].dtype:
            m2, v2, d = _adam_arrays(flat_g, flat_of(ms), flat_of(vs), b1, b2, eps, step)
            new_m, new_v, out = split_like(m2, grads), split_like(v2, grads), split_like(d, grads)
        else:  # mixed dtypes or devices: leaf by leaf
            new_m, new_v, out = [], [], []
            for g, m, v in zip(grads, ms, vs):
                m2, v2, d = _adam_arrays(g.data, m.data, v.data, b1, b2, eps, step)
                new_m.append(Tensor(m2))
                new_v.append(Tensor(v2))
                out.append(Tensor(d))
        return out, AdamState(step, treedef.unflatten(new_m), treedef.unflatten(new_v))

    return Transform(init, update_leaves)


@attrs.frozen
class ScaleState:
    """The step count, for learning-rate schedules."""

    count: int


def scale_by_learning_rate(lr: float | Schedule) -> Transform[ScaleState]:
    """Multiply updates by ``-lr`` (a number or a schedule of the step count)."""
    schedule = as_schedule("scale_by_learning_rate", lr)

    def init(params: Params) -> ScaleState:
        return ScaleState(0)

    def update_leaves(
        leaves: list[Tensor], state: ScaleState, params: Params, treedef: _tree.TreeDef
    ) -> tuple[list[Tensor], ScaleState]:
        factor = -float(schedule(state.count))
        flat = flat_of(leaves)
        if flat is not None:
            scaled = split_like(flat * factor, leaves)
        else:
            scaled = [Tensor(u.data * factor) for u in leaves]
        return scaled, ScaleState(state.count + 1)

    return Transform(init, update_leaves)


@attrs.frozen
class TraceState:
    """The momentum buffer of `trace` (a pytree like the params)."""

    trace: Any


def trace(momentum: float, nesterov: bool = False) -> Transform[TraceState]:
    """Momentum: ``t = momentum * t + g``; the update is ``t`` (or ``g + momentum * t``)."""
    momentum = fraction("trace", "momentum", momentum)

    def init(params: Params) -> TraceState:
        return TraceState(_zeros_like(params))

    def update_leaves(
        grads: list[Tensor], state: TraceState, params: Params, treedef: _tree.TreeDef
    ) -> tuple[list[Tensor], TraceState]:
        check_tensors("sgd", "gradients", grads)
        prev = leaves_matching("sgd", "momentum buffers", state.trace, treedef, grads)
        new = [Tensor(momentum * t.data + g.data) for g, t in zip(grads, prev)]
        if nesterov:
            out = [Tensor(g.data + momentum * t.data) for g, t in zip(grads, new)]
        else:
            out = new
        return out, TraceState(treedef.unflatten(new))

    return Transform(init, update_leaves)


def adam_transform(lr: float | Schedule, b1: float, b2: float, eps: float) -> Transform[Any]:
    """Adam as a chain: Adam's direction, then the (negative) learning rate."""
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr))


def sgd_transform(lr: float | Schedule, momentum: float, nesterov: bool) -> Transform[Any]:
    """SGD, with optional (Nesterov) momentum, as a chain."""
    if momentum:
        return chain(trace(momentum, nesterov), scale_by_learning_rate(lr))
    return chain(scale_by_learning_rate(lr))
