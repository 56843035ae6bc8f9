"""The immutable `Tensor`: one array, a dtype, a device, and nothing else.

A tensor has no gradient field and no parent links. The graph of a computation
lives on a `Tape`, which records each op with the tensors it read and made, so
tensors stay plain values that can be shared, hashed by identity and reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs
import numpy as np

from .. import _tree
from .._arrays._traced import Traced, refuse_print, traced_asarray
from .._arrays._backend import (
    Array,
    Device,
    check_device,
    cupy_module,
    default_device,
    device_of,
    to_device,
    to_host,
)

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

#: What an op accepts where it wants a tensor: Python numbers follow NumPy 2's
#: weak-scalar rule (NEP 50), so ``x * 0.5`` keeps a float32 ``x`` float32.
Scalar: TypeAlias = "int | float | bool"
TensorLike: TypeAlias = "Tensor | int | float | bool | Array | np.generic"
Index: TypeAlias = Any


@attrs.frozen(eq=False, repr=False)
class Tensor:
    """An immutable n-dimensional array that ops can record on a `Tape`.

    Build one with `tapegrad.tensor`. Equality operators compare element-wise
    and return boolean tensors, so a tensor hashes by identity.

    >>> import tapegrad as tg
    >>> x = tg.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> (x * 2 + 1).sum(axis=0)
    Tensor([10., 14.], dtype=float32, device=cpu)
    """

    data: Array

    # Make NumPy defer to our reflected operators (`array * tensor`).
    __array_ufunc__ = None
    __hash__ = object.__hash__

    # ---- properties -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape."""
        return self.data.shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """The array's dtype (a NumPy dtype on every device)."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self.data.ndim

    @property
    def size(self) -> int:
        """The number of elements."""
        return int(self.data.size)

    @property
    def device(self) -> Device:
        """``'cpu'`` for NumPy arrays, ``'cuda'`` for CuPy arrays."""
        return device_of(self.data)

    @property
    def T(self) -> Tensor:  # noqa: N802 - NumPy's spelling
        """The tensor with its axes reversed."""
        return _shape.transpose(self)

    # ---- conversion -------------------------------------------------------
    def numpy(self) -> Array:
        """The values as a host NumPy array (a copy, so the tensor stays immutable)."""
        return np.array(to_host(self.data), copy=True)

    def item(self) -> Any:
        """The single value of a one-element tensor, as a Python number."""
        if self.size != 1:
            raise ValueError(
                f"item(): only a tensor with one element can be converted to a Python "
                f"number, this one has shape {self.shape}; index or reduce it first"
            )
        return self.data.item()

    def to(self, device: str) -> Tensor:
        """The same values on ``device`` (``'cpu'`` or ``'cuda'``); not recorded."""
        return Tensor(to_device(self.data, check_device(device)))

    def astype(self, dtype: DTypeLike) -> Tensor:
        """Cast to ``dtype``; differentiable between floating dtypes."""
        return _math.cast(self, dtype)

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> Array:
        # Writing to the result must never change the tensor: a copy, or with
        # copy=False (NumPy asks for no copy) a read-only view.
        host = to_host(self.data)
        if copy is False:
            view = host.astype(dtype, copy=False).view() if dtype is not None else host.view()
            view.flags.writeable = False
            return view
        return np.array(host, dtype=dtype, copy=True)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        for i in range(len(self)):
            yield self[i]

    def __bool__(self) -> bool:
        return bool(self.data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __repr__(self) -> str:
        if isinstance(self.data, Traced):  # inside a replay's trace
            refuse_print()
        body = np.array2string(
            to_host(self.data), separator=", ", prefix="Tensor(", threshold=64
        )
        return f"Tensor({body}, dtype={self.dtype}, device={self.device})"

    # ---- arithmetic -------------------------------------------------------
    def __add__(self, other: TensorLike) -> Tensor:
        return _math.add(self, other)

    def __radd__(self, other: TensorLike) -> Tensor:
        return _math.add(other, self)

    def __sub__(self, other: TensorLike) -> Tensor:
        return _math.sub(self, other)

    def __rsub__(self, other: TensorLike) -> Tensor:
        return _math.sub(other, self)

    def __mul__(self, other: TensorLike) -> Tensor:
        return _math.mul(self, other)

    def __rmul__(self, other: TensorLike) -> Tensor:
        return _math.mul(other, self)

    def __truediv__(self, other: TensorLike) -> Tensor:
        return _math.div(self, other)

    def __rtruediv__(self, other: TensorLike) -> Tensor:
        return _math.div(other, self)

    def __pow__(self, other: TensorLike) -> Tensor:
        return _math.pow(self, other)

    def __rpow__(self, other: TensorLike) -> Tensor:
        return _math.pow(other, self)

    def __matmul__(self, other: TensorLike) -> Tensor:
        return _linalg.matmul(self, other)

    def __rmatmul__(self, other: TensorLike) -> Tensor:
        return _linalg.matmul(other, self)

    def __neg__(self) -> Tensor:
        return _math.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _math.abs(self)

    # ---- comparisons: boolean results, never differentiated ----------------
    def __lt__(self, other: TensorLike) -> Tensor:
        return _math.less(self, other)

    def __le__(self, other: TensorLike) -> Tensor:
        return _math.less_equal(self, other)

    def __gt__(self, other: TensorLike) -> Tensor:
        return _math.greater(self, other)

    def __ge__(self, other: TensorLike) -> Tensor:
        return _math.greater_equal(self, other)

    def __eq__(self, other: object) -> Tensor:  # type: ignore[override]
        return _math.equal(self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> Tensor:  # type: ignore[override]
        return _math.not_equal(self, other)  # type: ignore[arg-type]

    def __getitem__(self, index: Index) -> Tensor:
        return _shape.getitem(self, index)

    # ---- methods mirroring NumPy's ----------------------------------------
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Sum over ``axis`` (all axes by default)."""
        return _reduce.sum(self, axis, keepdims)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Mean over ``axis`` (all axes by default)."""
        return _reduce.mean(self, axis, keepdims)

    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Maximum over ``axis``; tied maxima share the gradient evenly."""
        return _reduce.max(self, axis, keepdims)

    def min(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        """Minimum over ``axis``; tied minima share the gradient evenly."""
        return _reduce.min(self, axis, keepdims)

    def argmax(self, axis: int | None = None) -> Tensor:
        """Indices of the maxima (an integer tensor, not differentiable)."""
        return _reduce.argmax(self, axis)

    def argmin(self, axis: int | None = None) -> Tensor:
        """Indices of the minima (an integer tensor, not differentiable)."""
        return _reduce.argmin(self, axis)

    def reshape(self, *shape: int | tuple[int, ...]) -> Tensor:
        """The same values in a new shape; accepts ``reshape(2, 3)`` or ``reshape((2, 3))``."""
        target = shape[0] if len(shape) == 1 and isinstance(shape[0], tuple) else shape
        return _shape.reshape(self, target)  # type: ignore[arg-type]

    def transpose(self, *axes: int) -> Tensor:
        """Permute the axes (reverse them when none are given)."""
        return _shape.transpose(self, axes if axes else None)

    def squeeze(self, axis: int | tuple[int, ...] | None = None) -> Tensor:
        """Drop axes of length one."""
        return _shape.squeeze(self, axis)

    def clip(self, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
        """Limit values to ``[min, max]``."""
        return _math.clip(self, min, max)

    def exp(self) -> Tensor:
        """Element-wise ``e**x``."""
        return _math.exp(self)

    def log(self) -> Tensor:
        """Element-wise natural logarithm."""
        return _math.log(self)

    def sqrt(self) -> Tensor:
        """Element-wise square root."""
        return _math.sqrt(self)

    def tanh(self) -> Tensor:
        """Element-wise hyperbolic tangent."""
        return _math.tanh(self)


def tensor(obj: Any, dtype: DTypeLike | None = None, device: str | None = None) -> Tensor:
    """Build a `Tensor` from Python numbers, nested lists, or an array.

    Python floats become float32, as in PyTorch; arrays keep their dtype;
    integer data stays integer (for labels). The data is copied, so later
    changes to ``obj`` never reach the tensor.

    >>> import tapegrad as tg
    >>> tg.tensor([1.5, 2.0]).dtype, tg.tensor([1, 2]).dtype
    (dtype('float32'), dtype('int64'))
    """
    if isinstance(obj, Tensor):
        if dtype is None and device is None:
            return obj
        obj = obj.data
    if isinstance(obj, list | tuple) and any(isinstance(o, Tensor) for o in obj):
        raise TypeError(
            "tensor(): the list holds Tensors; combine them with tapegrad.stack(...) "
            "so the result stays differentiable"
        )
    target: Device = default_device() if device is None else check_device(device)
    if type(obj) is Traced and target == "cpu":
        # Under `replay`: a recorded copy (np.array would freeze the traced value).
        copied: Any = traced_asarray(obj.astype(obj.dtype if dtype is None else dtype, copy=True))
        return Tensor(copied)
    source = device_of(obj) if hasattr(obj, "__cuda_array_interface__") or isinstance(
        obj, np.ndarray | np.generic
    ) else "cpu"
    is_array = isinstance(obj, np.ndarray | np.generic) or source == "cuda"
    xp = np if source == "cpu" else cupy_module()
    array = xp.array(obj, dtype=dtype, copy=True)
    if dtype is None and not is_array and array.dtype == np.float64:
        array = array.astype(np.float32)  # Python floats default to float32
    if array.dtype == object:
        raise TypeError(
            f"tensor(): cannot build a tensor from {type(obj).__name__}; "
            "pass numbers, nested lists of numbers, or an array"
        )
    if target != source:
        array = to_device(array, target)
    return Tensor(array)


def wrap(array: Any) -> Tensor:
    """Wrap an op's raw result, turning NumPy scalars back into 0-d arrays."""
    if type(array) is not np.ndarray:
        if isinstance(array, np.generic | int | float | bool):
            array = np.asarray(array)
        elif type(array) is Traced:
            array = traced_asarray(array)
    return Tensor(array)


# A Tensor is a leaf of every pytree, though it is an attrs class. The pytree module knows
# no array type (as JAX's registry knows none), so the engine registers its own.
_tree.register_leaf(Tensor)

# The methods above dispatch to the op modules, which import `Tensor` from here.
from . import _linalg, _math, _reduce, _shape  # noqa: E402
