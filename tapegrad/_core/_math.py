"""Element-wise ops: arithmetic, transcendental functions, selection, casts.

Each primitive sits beside its vector-Jacobian rule. Rules are written with
tapegrad ops, so they are differentiable again, and they return cotangents in
the broadcast shape: the tape reduces them to each input's shape.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .._arrays._backend import array_module, select
from ._dispatch import as_tensor, binary, compare, lift, raw, same_device, shapes_of, unary, unify
from ._primitive import Grads, primitive
from ._record import active_tapes, emit
from ._tensor import Tensor, TensorLike, wrap


# ---- arithmetic ---------------------------------------------------------------
def add(a: TensorLike, b: TensorLike) -> Tensor:
    """``a + b``, broadcasting as NumPy does."""
    return binary(ADD, a, b, operator.add)


ADD = primitive("add", lambda g, out, inputs, p, needs: (g, g))


def sub(a: TensorLike, b: TensorLike) -> Tensor:
    """``a - b``, broadcasting as NumPy does."""
    return binary(SUB, a, b, operator.sub)


SUB = primitive("sub", lambda g, out, inputs, p, needs: (g, neg(g) if needs[1] else None))


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    """``a * b``, broadcasting as NumPy does."""
    return binary(MUL, a, b, operator.mul)


def _mul_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    a, b = inputs
    return (g * b if needs[0] else None, g * a if needs[1] else None)


MUL = primitive("mul", _mul_vjp)


def div(a: TensorLike, b: TensorLike) -> Tensor:
    """``a / b`` (true division), broadcasting as NumPy does."""
    return binary(DIV, a, b, operator.truediv)


def _div_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    a, b = inputs
    return (g / b if needs[0] else None, -(g * out) / b if needs[1] else None)


DIV = primitive("div", _div_vjp)


def pow(a: TensorLike, b: TensorLike) -> Tensor:  # noqa: A001 - NumPy's name
    """``a ** b``; the exponent may be a number or a tensor."""
    return binary(POW, a, b, operator.pow)


def _pow_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    a, b = inputs
    # b * a**(b-1) is 0 * inf = NaN at a == 0 for b == 0; x**0 is constant, so its
    # gradient is 0, as in JAX and PyTorch. Where a == 0 and b == 0 the exponent
    # becomes 1 (b * a**1 is 0 there too), which keeps every higher derivative
    # finite. Only there: at a != 0 the exponent stays b - 1, so the mixed second
    # derivative d/db (b * a**(b-1)) at b == 0 is 1/a, as finite differences say.
    ga = g * b * a ** where(logical_and(a == 0, b == 0), 1, b - 1) if needs[0] else None
    # d(a**b)/db = a**b log a; at a == 0 the limit is 0, as JAX and PyTorch take it.
    gb = g * out * log(where(a == 0, 1, a)) if needs[1] else None
    return (ga, gb)


POW = primitive("pow", _pow_vjp)


def neg(x: TensorLike) -> Tensor:
    """``-x``."""
    return unary(NEG, x, operator.neg)


NEG = primitive("neg", lambda g, out, inputs, p, needs: (neg(g),))


# ---- transcendental -------------------------------------------------------------
def exp(x: TensorLike) -> Tensor:
    """Element-wise ``e**x``."""
    return unary(EXP, x, np.exp)


EXP = primitive("exp", lambda g, out, inputs, p, needs: (g * out,))


def log(x: TensorLike) -> Tensor:
    """Element-wise natural logarithm (``-inf`` at 0, ``nan`` below, as NumPy)."""
    return unary(LOG, x, np.log)


LOG = primitive("log", lambda g, out, inputs, p, needs: (g / inputs[0],))


def sqrt(x: TensorLike) -> Tensor:
    """Element-wise square root."""
    return unary(SQRT, x, np.sqrt)


SQRT = primitive("sqrt", lambda g, out, inputs, p, needs: (g / (out * 2),))


def abs(x: TensorLike) -> Tensor:  # noqa: A001 - NumPy's name
    """Element-wise absolute value; its gradient at 0 is 0, as in NumPy's ``sign``."""
    return unary(ABS, x, np.abs)


ABS = primitive("abs", lambda g, out, inputs, p, needs: (g * sign(inputs[0]).astype(g.dtype),))


def tanh(x: TensorLike) -> Tensor:
    """Element-wise hyperbolic tangent."""
    return unary(TANH, x, np.tanh)


TANH = primitive("tanh", lambda g, out, inputs, p, needs: (g * (1 - out * out),))


def _sigmoid(x: Any) -> Any:
    # tanh form: never overflows, and stays in the input's dtype.
    return 0.5 * (np.tanh(0.5 * x) + 1)


def sigmoid(x: TensorLike) -> Tensor:
    """Element-wise logistic function ``1 / (1 + e**-x)``, stable for large ``|x|``."""
    return unary(SIGMOID, x, _sigmoid)


SIGMOID = primitive("sigmoid", lambda g, out, inputs, p, needs: (g * out * (1 - out),))


def sin(x: TensorLike) -> Tensor:
    """Element-wise sine."""
    return unary(SIN, x, np.sin)


SIN = primitive("sin", lambda g, out, inputs, p, needs: (g * cos(inputs[0]),))


def cos(x: TensorLike) -> Tensor:
    """Element-wise cosine."""
    return unary(COS, x, np.cos)


COS = primitive("cos", lambda g, out, inputs, p, needs: (neg(g * sin(inputs[0])),))


# ---- selection ------------------------------------------------------------------
def _tie_weights(a: Tensor, b: Tensor, g: Tensor, a_wins: Any) -> Tensor:
    """1 where ``a`` wins, 1/2 on ties (split evenly, as PyTorch does), else 0."""
    xp = array_module(g.data)
    w = xp.where(a_wins, 1.0, xp.where(a.data == b.data, 0.5, 0.0))
    return Tensor(w.astype(g.dtype, copy=False))


def maximum(a: TensorLike, b: TensorLike) -> Tensor:
    """Element-wise maximum; at ties each side gets half the gradient."""
    return binary(MAXIMUM, a, b, np.maximum)


def _maximum_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    a, b = inputs
    w = _tie_weights(a, b, g, a.data > b.data)
    return (g * w if needs[0] else None, g * (1 - w) if needs[1] else None)


MAXIMUM = primitive("maximum", _maximum_vjp)


def minimum(a: TensorLike, b: TensorLike) -> Tensor:
    """Element-wise minimum; at ties each side gets half the gradient."""
    return binary(MINIMUM, a, b, np.minimum)


def _minimum_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    a, b = inputs
    w = _tie_weights(a, b, g, a.data < b.data)
    return (g * w if needs[0] else None, g * (1 - w) if needs[1] else None)


MINIMUM = primitive("minimum", _minimum_vjp)


def relu(x: TensorLike) -> Tensor:
    """``max(x, 0)``: the gradient is 1 where ``x > 0``, else 0.

    A NaN stays NaN, as in PyTorch and JAX, and its gradient is 0 (as in JAX;
    PyTorch passes the gradient through). One primitive rather than
    ``where(x > 0, x, 0)``: the forward pass is a single ``maximum``, where the
    composition made a mask and selected by it, and a NaN came out as 0.
    """
    return unary(RELU, x, _relu_array)


def _relu_array(d: Any) -> Any:
    # NumPy's maximum takes 0 in the array's dtype (NEP 50), and keeps NaN.
    return array_module(d).maximum(d, 0)


# out > 0 exactly where x > 0 (NaN in both is not > 0), and out is what the tape kept.
RELU = primitive("relu", lambda g, out, inputs, p, needs: (where(out > 0, g, 0),))


def clip(x: TensorLike, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    """Limit values to ``[min, max]``; the gradient passes where ``min <= x <= max``."""
    if min is None and max is None:
        raise ValueError("`clip`: give at least one of min= and max=")
    if min is not None and max is not None and min > max:
        raise ValueError(f"`clip`: min={min} is greater than max={max}")
    return unary(CLIP, x, lambda d: np.clip(d, min, max), (min, max))


def _clip_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    lo, hi = p
    x = inputs[0].data
    inside = (x >= lo) if lo is not None else (x == x)
    if hi is not None:
        inside = inside & (x <= hi)
    return (g * Tensor(inside.astype(g.dtype)),)


CLIP = primitive("clip", _clip_vjp)


def where(condition: TensorLike, x: TensorLike, y: TensorLike) -> Tensor:
    """``x`` where ``condition`` holds, else ``y``, broadcasting all three.

    The rule sends exact zeros to the branch not taken, but a NaN can still
    enter through that branch's own rule: ``where(x > 0, log(x), 0)`` at
    ``x = 0`` has gradient nan (log's rule divides the zero by ``x``: ``0/0``),
    as in JAX and PyTorch. The safe pattern makes the unused branch harmless
    before the op: ``where(x > 0, log(where(x > 0, x, 1)), 0)`` has gradient
    exactly 0 there, and its forward pass does not warn either.
    """
    c = condition.data if type(condition) is Tensor else raw(condition, "where")
    if getattr(c, "dtype", None) != np.bool_ and not isinstance(c, bool):
        raise TypeError(
            f"`where`: condition must be boolean, got dtype {getattr(c, 'dtype', type(c).__name__)}; "
            "compare first, e.g. where(x > 0, x, 0)"
        )
    if type(x) is not Tensor or type(y) is not Tensor or x.data.dtype != y.data.dtype:
        x, y = unify("where", x, y)  # the promotion rule of binary ops
    xd = x.data if type(x) is Tensor else raw(x, "where")
    yd = y.data if type(y) is Tensor else raw(y, "where")
    arrays = [a for a in (c, xd, yd) if not isinstance(a, bool | int | float)]
    if any(type(a) is not np.ndarray for a in arrays):  # not all on the host: check devices
        same_device("where", c, xd, yd)
    try:
        result = select(c, xd, yd) if arrays else np.where(c, xd, yd)
    except ValueError:
        raise ValueError(
            f"`where`: shapes {shapes_of(c, xd, yd)} do not broadcast; line them up first"
        ) from None
    if active_tapes():  # only a recording tape reads the inputs (see `binary`)
        dtype = result.dtype
        inputs = (as_tensor(condition, "where"), lift(x, dtype), lift(y, dtype))
        return emit(WHERE, inputs, result)
    return emit(WHERE, (), result)


def _where_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    c = inputs[0]
    return (
        None,
        where(c, g, 0) if needs[1] else None,
        where(c, 0, g) if needs[2] else None,
    )


WHERE = primitive("where", _where_vjp)


# ---- dtype and copies -------------------------------------------------------------
def cast(x: TensorLike, dtype: DTypeLike) -> Tensor:
    """``x`` as ``dtype``; differentiable between floating dtypes."""
    t = as_tensor(x, "astype")
    target = np.dtype(dtype)
    if t.dtype == target:
        return t
    return emit(CAST, (t,), t.data.astype(target))


CAST = primitive("cast", lambda g, out, inputs, p, needs: (cast(g, inputs[0].dtype),))


def copy(x: TensorLike) -> Tensor:
    """A tensor with the same values in memory of its own."""
    t = as_tensor(x, "copy")
    return emit(COPY, (t,), t.data.copy())


COPY = primitive("copy", lambda g, out, inputs, p, needs: (g,))


# ---- never differentiated: boolean and sign results ---------------------------------
def sign(x: TensorLike) -> Tensor:
    """Element-wise sign (-1, 0 or 1); a constant for differentiation."""
    return wrap(np.sign(as_tensor(x, "sign").data))


def isfinite(x: TensorLike) -> Tensor:
    """Element-wise test for finite values (a boolean tensor)."""
    return wrap(np.isfinite(as_tensor(x, "isfinite").data))


def isnan(x: TensorLike) -> Tensor:
    """Element-wise test for NaN (a boolean tensor)."""
    return wrap(np.isnan(as_tensor(x, "isnan").data))


def less(a: TensorLike, b: TensorLike) -> Tensor:
    """``a < b`` (a boolean tensor)."""
    return compare("less", a, b, operator.lt)


def less_equal(a: TensorLike, b: TensorLike) -> Tensor:
    """``a <= b`` (a boolean tensor)."""
    return compare("less_equal", a, b, operator.le)


def greater(a: TensorLike, b: TensorLike) -> Tensor:
    """``a > b`` (a boolean tensor)."""
    return compare("greater", a, b, operator.gt)


def greater_equal(a: TensorLike, b: TensorLike) -> Tensor:
    """``a >= b`` (a boolean tensor)."""
    return compare("greater_equal", a, b, operator.ge)


def equal(a: TensorLike, b: TensorLike) -> Tensor:
    """``a == b`` element-wise (a boolean tensor)."""
    return compare("equal", a, b, operator.eq)


def not_equal(a: TensorLike, b: TensorLike) -> Tensor:
    """``a != b`` element-wise (a boolean tensor)."""
    return compare("not_equal", a, b, operator.ne)


def logical_and(a: TensorLike, b: TensorLike) -> Tensor:
    """Element-wise ``and`` of boolean tensors."""
    return compare("logical_and", a, b, np.logical_and)


def logical_or(a: TensorLike, b: TensorLike) -> Tensor:
    """Element-wise ``or`` of boolean tensors."""
    return compare("logical_or", a, b, np.logical_or)


def logical_not(x: TensorLike) -> Tensor:
    """Element-wise ``not`` of a boolean tensor."""
    return wrap(np.logical_not(as_tensor(x, "logical_not").data))

