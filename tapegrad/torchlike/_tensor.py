"""A mutable, PyTorch-flavoured tensor around an immutable core `Tensor`.

``.data`` is the raw array and may be rebound (optimizers do); ``.grad`` is
filled by ``backward()``. Every op unwraps to the functional core, so the
same tape and the same rules compute everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._core import _math, _reduce
from .._arrays._backend import Array
from .._core._record import stop_gradient
from .._core._tensor import Tensor as CoreTensor
from .._core._tensor import tensor as core_tensor
from . import _autograd


IN_PLACE_LEAF = (
    "`{symbol}`: a leaf Variable that requires grad is being used in an in-place operation. "
    "Update parameters inside `with torchlike.no_grad():`, as in PyTorch"
)


class Tensor:
    """``Tensor(data, requires_grad=False)``: the wrapper's tensor.

    As in PyTorch: comparisons (``==``, ``<``, ...) are element-wise and give a
    bool tensor, while hashing stays by identity (parameters go in sets and
    dicts); ``float(loss)`` and ``int(t)`` read a one-element tensor; and
    ``p -= lr * p.grad`` under ``no_grad()`` updates ``p`` itself.

    >>> from tapegrad.torchlike import Tensor
    >>> w = Tensor([1.0, 2.0], requires_grad=True)
    >>> loss = (w * w).sum()
    >>> loss.backward()
    >>> w.grad.numpy().tolist()
    [2.0, 4.0]
    """

    __slots__ = ("value", "requires_grad", "grad", "is_leaf", "__weakref__")

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.value: CoreTensor = data if isinstance(data, CoreTensor) else core_tensor(
            data.data if isinstance(data, Tensor) else data
        )
        if requires_grad and self.value.dtype.kind != "f":
            raise TypeError(
                f"Tensor: only floating tensors can require grad, this one has dtype {self.value.dtype}"
            )
        self.requires_grad = requires_grad
        self.grad: Tensor | None = None
        self.is_leaf = True

    # ---- PyTorch's surface ---------------------------------------------------
    @property
    def data(self) -> Array:
        """The raw array (NumPy or CuPy). Assigning to it replaces the values."""
        return self.value.data

    @data.setter
    def data(self, array: Array) -> None:
        self.value = CoreTensor(array)

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return self.value.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's dtype."""
        return self.value.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self.value.ndim

    @property
    def T(self) -> Tensor:  # noqa: N802
        """The tensor with its axes reversed."""
        return apply_op(lambda v: v.T, self)

    def item(self) -> Any:
        """The single value as a Python number."""
        return self.value.item()

    def __float__(self) -> float:
        """``float(loss)``: the single value, as in PyTorch."""
        return float(self.value)

    def __int__(self) -> int:
        """``int(t)`` of a one-element tensor."""
        return int(self.value)

    def __bool__(self) -> bool:
        """The truth of a one-element tensor (``if (a == b).all()`` style code)."""
        return bool(self.value)

    def numpy(self) -> Array:
        """A host NumPy copy of the values."""
        return self.value.numpy()

    def detach(self) -> Tensor:
        """The same values, cut from the graph (a new core tensor, unknown to any tape)."""
        return Tensor(stop_gradient(self.value))

    def backward(self, gradient: Tensor | None = None, retain_graph: bool = False) -> None:
        """Accumulate this tensor's gradient into every leaf that requires grad.

        As in PyTorch, the graph behind this tensor is freed afterwards, unless
        ``retain_graph=True``; other graphs recorded meanwhile are kept.
        """
        _autograd.backward(self, gradient, retain_graph)

    def zero_(self) -> Tensor:
        """Set every value to zero (rebinds ``.data``)."""
        self.data = self.value.data * 0
        return self

    def accumulate_grad(self, g: CoreTensor) -> None:
        """``grad += g``, creating ``grad`` on first use (as PyTorch does)."""
        self.grad = Tensor(g) if self.grad is None else Tensor(CoreTensor(self.grad.data + g.data))

    def __len__(self) -> int:
        return len(self.value)

    def __repr__(self) -> str:
        suffix = ", requires_grad=True" if self.requires_grad else ""
        return f"torchlike.{self.value!r}"[:-1] + suffix + ")"

    # ---- operators ---------------------------------------------------------------
    def __add__(self, o: Any) -> Tensor:
        return apply_op(_math.add, self, o)

    def __radd__(self, o: Any) -> Tensor:
        return apply_op(_math.add, o, self)

    def __sub__(self, o: Any) -> Tensor:
        return apply_op(_math.sub, self, o)

    def __rsub__(self, o: Any) -> Tensor:
        return apply_op(_math.sub, o, self)

    def __mul__(self, o: Any) -> Tensor:
        return apply_op(_math.mul, self, o)

    def __rmul__(self, o: Any) -> Tensor:
        return apply_op(_math.mul, o, self)

    def __truediv__(self, o: Any) -> Tensor:
        return apply_op(_math.div, self, o)

    def __rtruediv__(self, o: Any) -> Tensor:
        return apply_op(_math.div, o, self)

    def __pow__(self, o: Any) -> Tensor:
        return apply_op(_math.pow, self, o)

    def __matmul__(self, o: Any) -> Tensor:
        return apply_op(lambda a, b: a @ b, self, o)

    def __rmatmul__(self, o: Any) -> Tensor:
        return apply_op(lambda a, b: a @ b, o, self)

    def __neg__(self) -> Tensor:
        return apply_op(_math.neg, self)

    def __gt__(self, o: Any) -> Tensor:
        return apply_op(_math.greater, self, o)

    def __ge__(self, o: Any) -> Tensor:
        return apply_op(_math.greater_equal, self, o)

    def __lt__(self, o: Any) -> Tensor:
        return apply_op(_math.less, self, o)

    def __le__(self, o: Any) -> Tensor:
        return apply_op(_math.less_equal, self, o)

    # As in PyTorch, == and != compare element-wise and give a bool tensor; a tensor
    # still hashes by identity, so parameters can be kept in sets and dicts.
    def __eq__(self, o: object) -> Tensor:  # type: ignore[override]
        if not isinstance(o, _COMPARABLE):
            return NotImplemented  # as torch: `t == None` is False, by identity
        return apply_op(_math.equal, self, o)

    def __ne__(self, o: object) -> Tensor:  # type: ignore[override]
        if not isinstance(o, _COMPARABLE):
            return NotImplemented
        return apply_op(_math.not_equal, self, o)

    __hash__ = object.__hash__

    # ---- in place, as PyTorch's optimizers and hand-written SGD update parameters ----------
    def __iadd__(self, o: Any) -> Tensor:
        return self._in_place("+=", _math.add, o)

    def __isub__(self, o: Any) -> Tensor:
        return self._in_place("-=", _math.sub, o)

    def __imul__(self, o: Any) -> Tensor:
        return self._in_place("*=", _math.mul, o)

    def __itruediv__(self, o: Any) -> Tensor:
        return self._in_place("/=", _math.div, o)

    def _in_place(self, symbol: str, fn: Callable[..., CoreTensor], o: Any) -> Tensor:
        """``self = fn(self, o)`` keeping this object (its identity, ``grad`` and place in a module).

        Under ``no_grad()`` this is how a parameter is updated by hand; outside
        it, a leaf that requires grad is refused as PyTorch refuses it, since
        the graphs that read the old values would no longer match them.
        """
        if self.requires_grad and self.is_leaf and _autograd.grad_enabled():
            raise RuntimeError(IN_PLACE_LEAF.format(symbol=symbol))
        dtype = self.dtype

        def run(a: CoreTensor, b: Any) -> CoreTensor:
            result = fn(a, b)
            if result.dtype != dtype:  # in place keeps the tensor's dtype, as PyTorch's does
                if not np.can_cast(result.dtype, dtype, "same_kind"):
                    raise RuntimeError(
                        f"`{symbol}`: the result has dtype {result.dtype}, which cannot be stored in "
                        f"place in a tensor of dtype {dtype}; cast the tensor first, as in PyTorch"
                    )
                result = result.astype(dtype)
            return result

        out = apply_op(run, self, o)
        if out.shape != self.shape:
            raise RuntimeError(
                f"`{symbol}`: the result has shape {out.shape} but the tensor updated in place has "
                f"shape {self.shape}; the right-hand side must broadcast to the tensor's shape"
            )
        value = out.value
        self.value = value
        if out.requires_grad:  # recorded: this object is now the op's output
            self.requires_grad = True
            self.is_leaf = False
            _autograd.track(self)
        return self

    def __getitem__(self, index: Any) -> Tensor:
        index = index.value if isinstance(index, Tensor) else index
        return apply_op(lambda v: v[index], self)

    def sum(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis``."""
        return apply_op(lambda v: _reduce.sum(v, axis, keepdims), self)

    def mean(self, axis: Any = None, keepdims: bool = False) -> Tensor:
        """Mean over ``axis``."""
        return apply_op(lambda v: _reduce.mean(v, axis, keepdims), self)

    def reshape(self, *shape: Any) -> Tensor:
        """The same values in a new shape."""
        return apply_op(lambda v: v.reshape(*shape), self)

    def exp(self) -> Tensor:
        """Element-wise ``e**x``."""
        return apply_op(_math.exp, self)

    def log(self) -> Tensor:
        """Element-wise natural logarithm."""
        return apply_op(_math.log, self)


_COMPARABLE = (Tensor, CoreTensor, int, float, np.ndarray, np.generic)


def apply_op(fn: Callable[..., CoreTensor], *args: Any) -> Tensor:
    """Run a core op on unwrapped arguments; the result requires grad if any input does.

    Only then is the op recorded, on the thread's ambient tape, entered for
    this op alone: functional code that runs between wrapper ops is never recorded.
    """
    values = [a.value if isinstance(a, Tensor) else a for a in args]
    if not _autograd.grad_enabled():
        return Tensor(fn(*values))
    tape = None
    for a in args:
        if isinstance(a, Tensor) and a.requires_grad:
            if tape is None:
                tape = _autograd.recording_tape()
            if a.is_leaf:
                _autograd.watch(a)
    if tape is None:
        return Tensor(fn(*values))
    if tape.recording:  # an op run inside another wrapper op's function
        result = fn(*values)
    else:
        tape.__enter__()
        try:
            result = fn(*values)
        finally:
            tape.__exit__(None, None, None)
    out = Tensor(result)
    if out.value.dtype.kind == "f":
        out.requires_grad = True
        out.is_leaf = False
        _autograd.track(out)
    return out


def where(condition: Any, x: Any, y: Any) -> Tensor:
    """``x`` where ``condition`` holds, else ``y`` (differentiable in ``x`` and ``y``)."""
    return apply_op(_math.where, condition, x, y)
