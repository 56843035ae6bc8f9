"""Adam and SGD, composed from small transformations as optax builds them."""

from __future__ import annotations

from typing import Any

import attrs

from .. import _tree
from .._backend import array_module
from .._tensor import Tensor
from ._schedule import as_schedule
from ._transform import (
    Params,
    Schedule,
    Transform,
    Updates,
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
    return treedef.unflatten(Tensor(array_module(p.data).zeros_like(p.data)) for p in leaves)


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

    def update(updates: Updates, state: AdamState, params: Params) -> tuple[Updates, AdamState]:
        if not isinstance(state, AdamState):
            raise TypeError(f"`adam`: expected an AdamState from init(), got {type(state).__name__}")
        grads, treedef = _tree.flatten(updates)
        check_tensors("adam", "gradients", grads)
        ms = leaves_matching("adam", "first moments (state.m)", state.m, treedef)
        vs = leaves_matching("adam", "second moments (state.v)", state.v, treedef)
        step = state.step + 1
        # Python floats, so float32 stays float32 (NEP 50).
        c1 = 1.0 - b1**step
        c2 = 1.0 - b2**step
        new_m, new_v, out = [], [], []
        for g, m, v in zip(grads, ms, vs):
            gd = g.data
            m2 = b1 * m.data + (1.0 - b1) * gd
            v2 = b2 * v.data + (1.0 - b2) * (gd * gd)
            denom = array_module(gd).sqrt(v2 / c2)
            denom += eps
            direction = m2 / c1
            direction /= denom
            new_m.append(Tensor(m2))
            new_v.append(Tensor(v2))
            out.append(Tensor(direction))
        return treedef.unflatten(out), AdamState(
            step, treedef.unflatten(new_m), treedef.unflatten(new_v)
        )

    return Transform(init, update)


@attrs.frozen
class ScaleState:
    """The step count, for learning-rate schedules."""

    count: int


def scale_by_learning_rate(lr: float | Schedule) -> Transform[ScaleState]:
    """Multiply updates by ``-lr`` (a number or a schedule of the step count)."""
    schedule = as_schedule("scale_by_learning_rate", lr)

    def init(params: Params) -> ScaleState:
        return ScaleState(0)

    def update(updates: Updates, state: ScaleState, params: Params) -> tuple[Updates, ScaleState]:
        factor = -float(schedule(state.count))
        leaves, treedef = _tree.flatten(updates)
        return treedef.unflatten(Tensor(u.data * factor) for u in leaves), ScaleState(state.count + 1)

    return Transform(init, update)


@attrs.frozen
class TraceState:
    """The momentum buffer of `trace` (a pytree like the params)."""

    trace: Any


def trace(momentum: float, nesterov: bool = False) -> Transform[TraceState]:
    """Momentum: ``t = momentum * t + g``; the update is ``t`` (or ``g + momentum * t``)."""
    momentum = fraction("trace", "momentum", momentum)

    def init(params: Params) -> TraceState:
        return TraceState(_zeros_like(params))

    def update(updates: Updates, state: TraceState, params: Params) -> tuple[Updates, TraceState]:
        grads, treedef = _tree.flatten(updates)
        check_tensors("sgd", "gradients", grads)
        prev = leaves_matching("sgd", "momentum buffers", state.trace, treedef)
        new = [Tensor(momentum * t.data + g.data) for g, t in zip(grads, prev)]
        if nesterov:
            out = [Tensor(g.data + momentum * t.data) for g, t in zip(grads, new)]
        else:
            out = new
        return treedef.unflatten(out), TraceState(treedef.unflatten(new))

    return Transform(init, update)


def adam_transform(lr: float | Schedule, b1: float, b2: float, eps: float) -> Transform[Any]:
    """Adam as a chain: Adam's direction, then the (negative) learning rate."""
    return chain(scale_by_adam(b1, b2, eps), scale_by_learning_rate(lr))


def sgd_transform(lr: float | Schedule, momentum: float, nesterov: bool) -> Transform[Any]:
    """SGD, with optional (Nesterov) momentum, as a chain."""
    if momentum:
        return chain(trace(momentum, nesterov), scale_by_learning_rate(lr))
    return chain(scale_by_learning_rate(lr))
