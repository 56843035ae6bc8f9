"""Gradient checking against central finite differences, up to any order.

As in HIPS autograd, the check compares directional derivatives along random
directions, so one check covers every input at the cost of two extra
function evaluations per order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ._arrays._backend import to_host
from ._core._tape import Tape
from ._core._tensor import Tensor, tensor


def _random_like(rng: np.random.Generator, t: Tensor) -> Tensor:
    return tensor(rng.standard_normal(t.shape), dtype=np.float64, device=t.device)


def _inner(a: Tensor, b: Tensor) -> Tensor:
    # In float64 (a differentiable cast): tapegrad never promotes float32 silently.
    return (a.astype(b.dtype) * b).sum()


def check_grads(
    f: Callable[..., Tensor],
    args: Sequence[Any],
    order: int = 2,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-7,
    seed: int = 0,
) -> None:
    """Check the tape's derivatives of ``f`` at ``args`` against finite differences.

    Floating tensors in ``args`` are cast to float64 and differentiated;
    anything else (integer labels, Python values) is held fixed. The output
    of ``f`` may have any shape: it is projected on a random direction. With
    ``order=2`` the gradient itself, computed under an outer tape, is checked
    the same way, which exercises every rule's own derivative.

    Raises `AssertionError` naming the order and both values on a mismatch.

    >>> import tapegrad as tg
    >>> from tapegrad.testing import check_grads
    >>> check_grads(lambda x: tg.tanh(x) * x, [tg.tensor([0.3, -1.2])], order=2)
    """
    if order < 1:
        raise ValueError(f"check_grads: order must be at least 1, got {order}")
    args64 = [
        a.astype(np.float64) if isinstance(a, Tensor) and a.dtype.kind == "f" else a for a in args
    ]
    diff = [i for i, a in enumerate(args64) if isinstance(a, Tensor) and a.dtype.kind == "f"]
    if not diff:
        raise ValueError("check_grads: no floating Tensor among args to differentiate")
    rng = np.random.default_rng(seed)
    probe = f(*args64)
    if not isinstance(probe, Tensor):
        raise TypeError(f"check_grads: f must return a Tensor, got {type(probe).__name__}")
    weight = _random_like(rng, probe)

    def scalar(*xs: Any) -> Tensor:
        return _inner(f(*xs), weight)

    _check_order(scalar, args64, diff, order, eps, rtol, atol, rng, order)


def _check_order(
    scalar: Callable[..., Tensor],
    args: list[Any],
    diff: list[int],
    order: int,
    eps: float,
    rtol: float,
    atol: float,
    rng: np.random.Generator,
    top: int,
) -> None:
    directions = [_random_like(rng, args[i]) for i in diff]

    def shifted(step: float) -> float:
        xs = list(args)
        for i, v in zip(diff, directions):
            xs[i] = args[i] + step * v
        return float(to_host(scalar(*xs).data))

    numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
    with Tape() as tape:
        value = scalar(*args)
    grads = tape.gradient(value, [args[i] for i in diff])
    analytic = float(sum(float(to_host(_inner(g, v).data)) for g, v in zip(grads, directions)))
    if not np.isclose(analytic, numeric, rtol=rtol, atol=atol):
        raise AssertionError(
            f"check_grads: order-{top - order + 1} derivative mismatch along a random "
            f"direction: tape gives {analytic!r}, central differences give {numeric!r} "
            f"(difference {abs(analytic - numeric):.3g})"
        )
    if order > 1:
        cotangents = [_random_like(rng, args[i]) for i in diff]

        def grad_dot(*xs: Any) -> Tensor:
            with Tape() as inner:
                s = scalar(*xs)
            gs = inner.gradient(s, [xs[i] for i in diff])
            total = _inner(gs[0], cotangents[0])
            for g, u in zip(gs[1:], cotangents[1:]):
                total = total + _inner(g, u)
            return total

        _check_order(grad_dot, args, diff, order - 1, eps, rtol, atol, rng, top)
