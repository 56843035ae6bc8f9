"""Array backends: NumPy on the host, CuPy on an NVIDIA GPU.

Every tensor holds one array, and every op runs on the module that owns its
inputs' arrays. Nothing here copies between devices behind the user's back.
The raw array kernels that ops share live here too: `zeros_for`, `scatter_add`
and `select` (``where`` by bit masking).
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

from ._traced import Traced

#: An array on either device. CuPy arrays duck-type as NumPy arrays for every
#: method the engine calls, so the type checker sees one array type.
Array: TypeAlias = NDArray[Any]
Device: TypeAlias = Literal["cpu", "cuda"]

_cupy: ModuleType | None = None


def cupy_module() -> ModuleType:
    """Import CuPy on first use, with an error that says how to get it."""
    global _cupy
    if _cupy is None:
        try:
            import cupy
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise RuntimeError(
                "device 'cuda' needs CuPy: install it with `pip install 'tapegrad[gpu]'` "
                "(or the cupy-cudaXXx wheel matching your CUDA version)"
            ) from exc
        _cupy = cupy
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        cp = cupy_module()
        return bool(cp.cuda.runtime.getDeviceCount() > 0)
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


def check_device(device: str) -> Device:
    """Validate a device name, naming the accepted ones on failure."""
    if device == "cpu":
        return "cpu"
    if device == "cuda":
        return "cuda"
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def default_device() -> Device:
    """The device for new tensors: ``TAPEGRAD_DEVICE`` if set, else ``'cpu'``."""
    return check_device(os.environ.get("TAPEGRAD_DEVICE", "cpu"))


#: Host arrays: NumPy's, and a traced one (see `replay`), which dispatches
#: every NumPy call it meets to the trace, so it takes the same code paths.
HOST_ARRAYS = (np.ndarray, Traced)
# What NumPy computes with: host arrays and NumPy scalars.
_HOST_TYPES = (*HOST_ARRAYS, np.generic)


def device_of(array: Any) -> Device:
    """The device an array lives on."""
    return "cpu" if isinstance(array, _HOST_TYPES) else "cuda"


def array_module(array: Any) -> ModuleType:
    """``numpy`` or ``cupy``, whichever owns ``array``."""
    return np if isinstance(array, _HOST_TYPES) else cupy_module()


def module_for(device: Device) -> ModuleType:
    """The array module for a device name."""
    return np if device == "cpu" else cupy_module()


def to_device(array: Any, device: Device) -> Array:
    """Copy ``array`` to ``device`` (a no-op when it is already there)."""
    if device_of(array) == device:
        return np.asarray(array) if device == "cpu" else array
    if device == "cpu":
        return array.get()  # type: ignore[no-any-return]
    return cupy_module().asarray(array)  # type: ignore[no-any-return]


def to_host(array: Any) -> Array:
    """A NumPy array with the same values, on the host."""
    return np.asarray(array) if device_of(array) == "cpu" else array.get()


def zeros_for(shape: tuple[int, ...], dtype: Any, values: Any, index: Any) -> Array:
    """Zeros of ``shape`` to scatter ``values`` into at ``index``, owned like the operands.

    The buffer is made with ``zeros_like`` of an operand, so it lands where the
    operands live: on their device, or, while `replay` traces, in the trace.
    The index counts: a gradient that is a constant (the seed's ones, spread
    by a mean) scattered at traced labels must still be a traced buffer, or
    NumPy would read the labels as a frozen constant.
    """
    parts = index if isinstance(index, tuple) else (index,)
    for operand in (values, *parts):
        if isinstance(operand, Traced) or (
            hasattr(operand, "__array_function__") and not isinstance(operand, np.ndarray | np.generic)
        ):
            return np.zeros_like(operand, dtype=dtype, shape=shape)
    return array_module(values).zeros(shape, dtype=dtype)  # type: ignore[no-any-return]


def scatter_add(out: Array, index: Any, values: Array) -> None:
    """``out[index] += values`` with repeated indices accumulating, in place."""
    if isinstance(out, HOST_ARRAYS):
        np.add.at(out, index, values)
    else:
        import cupyx  # pragma: no cover - GPU only

        cupyx.scatter_add(out, index, values)  # pragma: no cover


# Below this many elements NumPy's where is as fast (measured: 4,096 vs 32,768).
_SELECT_MIN_SIZE = 16_384
_BITS = {np.dtype(np.float16): np.int16, np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}


def _select_bits(c: Any, x: Any, y: Any) -> Any:
    """``np.where(c, x, y)`` by bit masking, or ``None`` outside the common case.

    NumPy's ``where`` runs about ten times slower than a ufunc on arrays of a
    few tens of thousands of floats (370 us for a 256x128 ReLU here, against
    75 us for this). Choosing
    bits with an all-ones or all-zeros integer mask is exact, NaN payloads and
    signed zeros included. The common case: a host boolean mask, and each of
    ``x``, ``y`` a Python number or a float array of the mask's shape.
    """
    if type(c) not in HOST_ARRAYS or c.dtype != np.bool_ or c.size < _SELECT_MIN_SIZE:
        return None
    dtype = np.result_type(x, y)
    bits = _BITS.get(dtype)
    if bits is None:
        return None
    operands = []
    for v in (x, y):
        if isinstance(v, int | float) and not isinstance(v, bool):
            operands.append(np.asarray(v, dtype).view(bits))
        elif type(v) in HOST_ARRAYS and v.shape == c.shape and v.dtype == dtype:
            operands.append(v.view(bits))
        else:
            return None
    xb, yb = operands
    mask = c.view(np.int8).astype(bits)
    np.negative(mask, out=mask)  # True -> all ones, False -> all zeros
    if yb.ndim == 0 and yb == 0:
        out = np.bitwise_and(xb, mask)
    else:
        out = np.bitwise_and(yb, np.invert(mask))
        if not (xb.ndim == 0 and xb == 0):
            out |= np.bitwise_and(xb, mask)
    return out.view(dtype)


def select(c: Any, x: Any, y: Any) -> Any:
    """``where(c, x, y)`` on arrays (or Python numbers) of any device, bit for bit.

    A large host float selection is done by bit masking (`_select_bits`), which is
    several times faster than NumPy's ``where``; everything else is ``where`` itself.
    At least one of ``c``, ``x``, ``y`` must be an array.
    """
    selected = _select_bits(c, x, y)
    if selected is not None:
        return selected
    arrays = [a for a in (c, x, y) if not isinstance(a, bool | int | float)]
    return array_module(arrays[0]).where(c, x, y)
