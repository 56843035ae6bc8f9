"""Argument checks shared by every op: what counts as a tensor, and devices.

Kept out of the op modules so that each op is its computation and its rule,
and so that every op words its errors the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._arrays._backend import device_of
from ._primitive import Primitive
from ._record import active_tapes, emit
from ._tensor import Tensor, TensorLike, wrap
from .._arrays._traced import Traced

_PY_SCALARS = (int, float, bool)


def as_tensor(x: Any, op: str, arg: str = "x") -> Tensor:
    """``x`` if it is a tensor; a Python number or array becomes a constant one."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, _PY_SCALARS):
        return Tensor(np.asarray(x, dtype=np.float32 if isinstance(x, float) else None))
    if isinstance(x, np.ndarray | np.generic | Traced) or hasattr(x, "__cuda_array_interface__"):
        return Tensor(np.asarray(x) if isinstance(x, np.generic) else x)
    raise TypeError(
        f"`{op}`: {arg} must be a Tensor, a Python number or an array, got "
        f"{type(x).__name__}; wrap it with tapegrad.tensor(...)"
    )


def raw(x: Any, op: str) -> Any:
    """The array (or Python number) that NumPy should see for an operand."""
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, _PY_SCALARS) or isinstance(x, np.ndarray | np.generic | Traced):
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return x
    raise TypeError(
        f"`{op}`: expected a Tensor, a Python number or an array, got "
        f"{type(x).__name__}; wrap it with tapegrad.tensor(...)"
    )


def lift(x: Any, dtype: Any) -> Tensor:
    """A constant tensor for an operand that was not a tensor.

    A Python number takes the dtype NumPy gave the result (NEP 50: it is weak),
    so its rule computes in the same dtype as the forward pass did.
    """
    if isinstance(x, Tensor):
        return x
    if isinstance(x, _PY_SCALARS):
        return Tensor(np.asarray(x, dtype=dtype))
    return Tensor(np.asarray(x) if isinstance(x, np.generic) else x)


def same_device(op: str, *arrays: Any) -> None:
    """Raise if the arrays live on different devices (no silent copies)."""
    devices = {device_of(a) for a in arrays if not isinstance(a, _PY_SCALARS)}
    if len(devices) > 1:
        raise ValueError(
            f"`{op}`: operands are on different devices (cpu and cuda); move one with "
            ".to('cuda') or .to('cpu') first"
        )


def shapes_of(*xs: Any) -> str:
    """``(2, 3) and (4,)``, for error messages."""
    return " and ".join(str(np.shape(x)) for x in xs)


def compute_binary(op: str, a: TensorLike, b: TensorLike, fn: Callable[[Any, Any], Any]) -> Any:
    """``fn`` on the operands' arrays, with NumPy's errors reworded to teach."""
    ad = raw(a, op)
    bd = raw(b, op)
    try:
        return fn(ad, bd)
    except ValueError as exc:
        if "broadcast" not in str(exc):
            raise
        raise ValueError(
            f"`{op}`: shapes {shapes_of(ad, bd)} do not broadcast; NumPy's rule "
            "matches shapes from the right, and each pair of sizes must be equal or 1. "
            "Reshape one operand (e.g. x[:, None]) to line them up."
        ) from None
    except TypeError:
        same_device(op, ad, bd)
        raise


def mixed_floats(op: str, da: Any, db: Any) -> TypeError:
    """The error for two floating dtypes of different widths, which no op promotes."""
    return TypeError(
        f"`{op}`: operands have dtypes {da} and {db}; floating dtypes of different widths "
        f"are never promoted silently. Cast one first, e.g. x.astype('{da}') or "
        f"x.astype('{db}')"
    )


def _cast_to(x: Any, dtype: Any) -> Any:
    """``x`` (an integer or boolean operand) in the floating ``dtype``, unrecorded."""
    if isinstance(x, Tensor):
        return Tensor(x.data.astype(dtype))
    return np.asarray(x).astype(dtype) if isinstance(x, np.generic) else x.astype(dtype)


_PYTHON_NUMBERS = (int, float, bool)


def unify(op: str, a: Any, b: Any) -> tuple[Any, Any]:
    """The operands under tapegrad's promotion rule (stated in the README).

    Python numbers are weak and left to NumPy (NEP 50), so they take the
    other operand's dtype; so are NumPy scalars (``np.sqrt(2.0)``), as in
    PyTorch, where NumPy would make float32 times ``np.float64`` float64. Two floating operands of different widths raise:
    NumPy would compute float32 with float64 in float64, silently and at half
    speed. An integer or boolean operand beside a floating one takes the
    floating dtype, as in PyTorch and JAX (NumPy would make int64 with
    float32 float64); it is not differentiable, so its cast is not recorded.
    """
    # A tensor and a Python number (``x * 0.5``), the next most common case: nothing to do.
    if (type(a) is Tensor and type(b) in _PYTHON_NUMBERS) or (type(b) is Tensor and type(a) in _PYTHON_NUMBERS):
        return a, b
    if isinstance(a, np.generic) and a.dtype.kind in "biuf":
        a = a.item()
    if isinstance(b, np.generic) and b.dtype.kind in "biuf":
        b = b.item()
    da = getattr(a.data if isinstance(a, Tensor) else a, "dtype", None)
    db = getattr(b.data if isinstance(b, Tensor) else b, "dtype", None)
    if da is None or db is None or da == db:
        return a, b
    fa, fb = da.kind == "f", db.kind == "f"
    if fa and fb:
        raise mixed_floats(op, da, db)
    if fa and db.kind in "iub":
        return a, _cast_to(b, da)
    if fb and da.kind in "iub":
        return _cast_to(a, db), b
    return a, b


def binary(prim: Primitive, a: TensorLike, b: TensorLike, fn: Callable[[Any, Any], Any]) -> Tensor:
    """Run a broadcasting binary op and record it with both operands as tensors."""
    if type(a) is Tensor and type(b) is Tensor and a.data.dtype == b.data.dtype:
        # The common case, without the checks.
        try:
            result = fn(a.data, b.data)
        except (ValueError, TypeError):
            result = compute_binary(prim.name, a, b, fn)  # raises, worded to teach
        return emit(prim, (a, b), result)
    a, b = unify(prim.name, a, b)
    result = compute_binary(prim.name, a, b, fn)
    # Only a recording tape reads the operands, so only then is a Python number made a
    # tensor: lifting it always would make `x * 2.0` on a 4x4 tensor 1.8 -> 2.5 us.
    if active_tapes():
        dtype = getattr(result, "dtype", None)
        return emit(prim, (lift(a, dtype), lift(b, dtype)), result)
    return emit(prim, (), result)


def compare(op: str, a: TensorLike, b: TensorLike, fn: Callable[[Any, Any], Any]) -> Tensor:
    """A binary op with a boolean (or integer) result, which is never recorded."""
    return wrap(compute_binary(op, a, b, fn))


def unary(prim: Primitive, x: TensorLike, fn: Callable[[Any], Any], params: Any = None) -> Tensor:
    """Run an element-wise op on one tensor and record it."""
    t = as_tensor(x, prim.name)
    return emit(prim, (t,), fn(t.data), params)
