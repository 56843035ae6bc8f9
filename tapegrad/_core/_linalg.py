"""Matrix products."""

from __future__ import annotations

from typing import Any

import math

import numpy as np

from ._dispatch import as_tensor, mixed_floats, same_device
from ._primitive import Grads, primitive
from ._record import active_tapes, emit
from ._reduce import sum as _sum
from ._shape import reshape, swapaxes
from ._tensor import Tensor, TensorLike


def _mismatch(a: Tensor, b: Tensor) -> ValueError:
    hint = ""
    if a.ndim >= 2 and b.ndim >= 2 and a.shape[-1] == b.shape[-1]:
        hint = "; did you mean `x @ w.T`?"
    elif a.ndim >= 2 and b.ndim >= 2 and a.shape[-2] == b.shape[-2]:
        hint = "; did you mean `x.T @ w`?"
    return ValueError(f"`matmul`: shapes {a.shape} and {b.shape} do not align{hint}")


def _check_dtypes(op: str, names: tuple[str, ...], *tensors: Tensor) -> None:
    """Refuse integer, boolean and mixed-width operands: products never promote.

    NumPy would compute them without BLAS (integers), or float32 with float64
    in float64 through a slow loop (40x slower) and return float64; PyTorch
    refuses both.
    """
    for name, t in zip(names, tensors):
        if t.dtype.kind != "f":
            raise TypeError(
                f"`{op}`: {name} has dtype {t.dtype}, but matrix products need floating "
                f"operands; cast it first, e.g. x.astype('float32'), or x.astype('float32') / 255 "
                f"for pixels"
            )
    first = tensors[0].dtype
    for t in tensors[1:]:
        if t.dtype != first:
            raise mixed_floats(op, first, t.dtype)


def matmul(a: TensorLike, b: TensorLike) -> Tensor:
    """Matrix product with NumPy's rules: 1-D operands are vectors, leading axes batch."""
    if type(a) is Tensor and type(b) is Tensor:
        ad, bd = a.data, b.data
        # The common case: same floating dtype and device, 2-D; anything else takes the checked path.
        if ad.ndim == 2 and bd.ndim == 2 and ad.dtype == bd.dtype and ad.dtype.kind == "f" and type(ad) is type(bd):
            if ad.shape[1] == bd.shape[0]:
                return emit(MATMUL, (a, b), ad @ bd)
    x = as_tensor(a, "matmul", "a")
    y = as_tensor(b, "matmul", "b")
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError(
            f"`matmul`: shapes {x.shape} and {y.shape}: matmul needs at least 1-D operands; "
            "use `*` to scale by a scalar"
        )
    if x.shape[-1] != y.shape[-2 if y.ndim > 1 else 0]:
        raise _mismatch(x, y)
    same_device("matmul", x.data, y.data)
    _check_dtypes("matmul", ("a", "b"), x, y)
    try:
        result = x.data @ y.data
    except ValueError:
        raise ValueError(
            f"`matmul`: the batch axes of shapes {x.shape} and {y.shape} do not broadcast"
        ) from None
    return emit(MATMUL, (x, y), result)


def _matmul_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    a, b = inputs
    if a.ndim >= 2 and b.ndim >= 2:  # the common case, with no reshaping
        return (
            g @ swapaxes(b, -1, -2) if needs[0] else None,
            swapaxes(a, -1, -2) @ g if needs[1] else None,
        )
    # Promote vectors to matrices as NumPy does, then undo the promotion.
    a2 = reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
    b2 = reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
    gshape = list(g.shape)
    if a.ndim == 1:
        gshape.insert(len(gshape) - (0 if b.ndim == 1 else 1), 1)
    if b.ndim == 1:
        gshape.append(1)
    g2 = reshape(g, tuple(gshape))
    ga = gb = None
    if needs[0]:
        ga = g2 @ swapaxes(b2, -1, -2)
        if a.ndim == 1:  # (..., 1, k): sum the batch, drop the promoted axis
            ga = reshape(_sum(ga, tuple(range(ga.ndim - 2))) if ga.ndim > 2 else ga, a.shape)
    if needs[1]:
        gb = swapaxes(a2, -1, -2) @ g2
        if b.ndim == 1:
            gb = reshape(_sum(gb, tuple(range(gb.ndim - 2))) if gb.ndim > 2 else gb, b.shape)
    return (ga, gb)


MATMUL = primitive("matmul", _matmul_vjp)


def affine(x: TensorLike, weight: TensorLike, bias: TensorLike | None = None) -> Tensor:
    """``x @ weight + bias`` as one op, for ``x`` of shape ``(..., in)`` and a 2-D ``weight``.

    Fused for speed, as PyTorch's ``F.linear``: one record instead of two, the
    bias added in place into the fresh product, and a rule that sums the bias
    gradient directly instead of through the tape's generic unbroadcast.

    >>> import tapegrad as tg
    >>> tg.affine(tg.tensor([[1.0, 2.0]]), tg.tensor([[1.0], [1.0]]), tg.tensor([0.5]))
    Tensor([[3.5]], dtype=float32, device=cpu)
    """
    if type(x) is Tensor and type(weight) is Tensor and (bias is None or type(bias) is Tensor):
        xd, wd = x.data, weight.data
        bd = None if bias is None else bias.data
        # The common case (host arrays of one dtype that fit) skips the checks below.
        if (
            type(xd) is np.ndarray
            and type(wd) is np.ndarray
            and wd.ndim == 2
            and xd.ndim >= 1
            and xd.shape[-1] == wd.shape[0]
            and xd.dtype == wd.dtype
            and wd.dtype.kind == "f"
            and (bd is None or (type(bd) is np.ndarray and bd.dtype == wd.dtype and bd.shape == wd.shape[1:]))
        ):
            result = xd @ wd
            if bd is None:
                return emit(AFFINE, (x, weight), result)
            result += bd
            return emit(AFFINE, (x, weight, bias), result)  # type: ignore[arg-type]
    xt = as_tensor(x, "affine", "x")
    w = as_tensor(weight, "affine", "weight")
    if w.ndim != 2 or xt.ndim == 0:
        raise ValueError(
            f"`affine`: needs x of shape (..., in) and a 2-D weight, got {xt.shape} and {w.shape}"
        )
    if xt.shape[-1] != w.shape[0]:
        raise _mismatch(xt, w)
    b = None if bias is None else as_tensor(bias, "affine", "bias")
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(
            f"`affine`: bias has shape {b.shape}, expected ({w.shape[1]},) for a weight of shape {w.shape}"
        )
    operands = (xt, w) if b is None else (xt, w, b)
    _check_dtypes("affine", ("x", "weight", "bias"), *operands)
    same_device("affine", *(t.data for t in operands))
    result = operands[0].data @ operands[1].data
    if len(operands) == 2:
        return emit(AFFINE, operands, result)
    result += operands[2].data  # the product is a fresh array that nothing else has seen
    return emit(AFFINE, operands, result)


def _matrix(shape: tuple[int, ...]) -> tuple[int, int]:
    """``shape`` as (rows, features), all leading axes folded into rows (size 0 included)."""
    return (math.prod(shape[:-1]), shape[-1])


def _affine_vjp(g: Tensor, out: Tensor, inputs: tuple[Tensor, ...], p: Any, needs: tuple[bool, ...]) -> Grads:
    x, w = inputs[0], inputs[1]
    has_bias = len(inputs) == 3
    if not active_tapes():
        # Nothing records this rule: the same products straight on the arrays. The one rule
        # that keeps an array copy: every Linear layer's backward runs here, and the six ops
        # the tensor path records (reshapes, transposes, two products, a sum) slow the eager
        # MLP step of benchmarks/train_step.py by 5.9% at batch 32 (1.5% at 256; medians of
        # 3 in-process A/B runs of 40 shuffled rounds). Both paths make the same NumPy calls.
        gd, xd = g.data, x.data
        rows = gd.reshape(_matrix(gd.shape))
        return (
            Tensor(gd @ w.data.T) if needs[0] else None,
            Tensor(xd.reshape(_matrix(xd.shape)).T @ rows) if needs[1] else None,
            *((Tensor(rows.sum(axis=0)) if needs[2] else None,) if has_bias else ()),
        )
    g2 = reshape(g, _matrix(g.shape))
    grads: list[Tensor | None] = [
        g @ swapaxes(w, 0, 1) if needs[0] else None,
        swapaxes(reshape(x, _matrix(x.shape)), 0, 1) @ g2 if needs[1] else None,
    ]
    if has_bias:
        grads.append(_sum(g2, 0) if needs[2] else None)
    return grads


AFFINE = primitive("affine", _affine_vjp)
