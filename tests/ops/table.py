"""The op table: one row per primitive, read by every per-op test.

Each `Op` row names a primitive (its key in `tapegrad.PRIMITIVES`), the tapegrad
function, the NumPy reference, the PyTorch function, how to draw its inputs and
its tolerances. Three test modules read `ROWS`, as JAX's ``LAX_GRAD_OPS`` and
PyTorch's OpInfo drive theirs:

- `test_grad_checks.py`: the row's fixed `GradCase`s, first and second derivatives
  against finite differences in float64;
- `test_properties.py`: the row's sampler under Hypothesis, in float32 and float64:
  forward value against NumPy, finite differences, linearity in the cotangent, no
  mutation or aliasing, gradient dtypes;
- `test_torch_parity.py`: the row's sampler in float64: values and gradients
  against PyTorch autograd.

**Adding an op means adding one row here.** A pointwise op needs only its
functions and one `Domain` per input (``elementwise(...)`` writes the sampler and
the gradient checks); a structured op brings a sampler and its gradient cases.
`test_table.py` fails, naming the op, while a primitive has no row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import strategies as st

import tapegrad as tg
from tapegrad import Tensor
from tapegrad._core._shape import scatter_add

from ._inputs import (
    Array,
    Domain,
    Draws,
    DType,
    GradCase,
    Sample,
    Sampler,
    Shape,
    distinct,
    elements,
    nonzero,
    pointwise,
    pointwise_cases,
    positive,
    randn,
)

REAL, POSITIVE, NONZERO = Domain.REAL, Domain.POSITIVE, Domain.NONZERO
SMOOTH, GRID, OFF_GRID = Domain.SMOOTH, Domain.GRID, Domain.OFF_GRID


@attrs.frozen
class Tolerances:
    """How close each kind of test asks the op to be (``rtol``, ``atol`` pairs)."""

    # Property tests: the forward value against NumPy, by dtype.
    numpy_float32: float = 1e-6
    numpy_float64: float = 1e-14
    # Property tests: first derivatives against finite differences (float64), and their step.
    fd_eps: float = 1e-6
    fd: tuple[float, float] = (1e-6, 1e-8)
    # PyTorch parity: values, then gradients.
    torch_value: tuple[float, float] = (1e-10, 1e-12)
    torch_grad: tuple[float, float] = (1e-9, 1e-12)


@attrs.frozen
class Op:
    """One primitive, as every per-op test sees it.

    The three functions take the same arguments: ``fn(*arrays, *params)`` of a
    `Sample` (tensors for tapegrad, arrays for NumPy, tensors for PyTorch).
    """

    name: str  # its key in tapegrad.PRIMITIVES
    tg_fn: Callable[..., Tensor]
    np_fn: Callable[..., Any]
    torch_fn: Callable[..., torch.Tensor]
    sample: Sampler  # Hypothesis draws, for the property and parity tests
    grad: tuple[GradCase, ...]  # fixed float64 inputs, checked to second order
    # Our subgradient at a kink or tie is PyTorch's: parity draws there too (see `Draws`).
    torch_at_kinks: bool = False
    tol: Tolerances = Tolerances()


def elementwise(
    name: str,
    tg_fn: Callable[..., Tensor],
    np_fn: Callable[..., Any],
    torch_fn: Callable[..., torch.Tensor],
    *domains: Domain,
    sample: Sampler | None = None,
    grad: tuple[GradCase, ...] | None = None,
    torch_at_kinks: bool = False,
) -> Op:
    """The row of a pointwise op: one `Domain` per input gives its sampler and its gradient checks."""
    return Op(
        name,
        tg_fn,
        np_fn,
        torch_fn,
        sample or pointwise(*domains),
        pointwise_cases(name, tg_fn, domains) if grad is None else grad,
        torch_at_kinks,
    )


# ---- samplers of the structured ops ------------------------------------------------------
def _pow(d: Draws, dtype: DType) -> Sample:
    """A tensor exponent over a positive base, or a small integer one over a base with zeros."""
    if d(st.booleans()):
        return pointwise(POSITIVE, REAL)(d, dtype)
    k = d(st.sampled_from([-2, -1, 0, 1, 2, 3]))
    if k < 0:  # drawn away from the pole at 0
        values = elements(NONZERO, dtype)
    else:
        # Zeros: x**0 once had a NaN gradient at x = 0. But no base below float32's smallest
        # normal: there x**(k-1) overflows, and the gradient of x**0 is 0 * inf, a NaN (a known
        # failure, pinned in test_grad_checks.py).
        tiny = float(np.finfo(np.float32).tiny)
        width: Literal[32, 64] = 32 if dtype == np.float32 else 64
        values = st.just(0.0) | st.floats(tiny, 3.0, width=width) | st.floats(-3.0, -tiny, width=width)
    return Sample((np.asarray(d(hnp.arrays(dtype, d.shape(), elements=values))),), (k,))


def _clip(d: Draws, dtype: DType) -> Sample:
    bounds = d(st.sampled_from([(-0.5, 1.0), (-0.5, None), (None, 1.0)]))
    return Sample((d.array(d.shape(), dtype, SMOOTH),), bounds)


def _where(d: Draws, dtype: DType) -> Sample:
    sc, sx, sy = d.shapes(3)
    c = np.asarray(d(hnp.arrays(np.bool_, sc)))
    return Sample((c, d.array(sx, dtype), d.array(sy, dtype)))


def _cast(d: Draws, dtype: DType) -> Sample:
    return Sample((d.array(d.shape(), dtype),), (np.float64 if dtype == np.float32 else np.float32,))


def _reshape(d: Draws, dtype: DType) -> Sample:
    x = d.array(d.shape(), dtype)
    # The reversed shape, or one that NumPy's -1 completes.
    target = d(st.sampled_from([x.shape[::-1], (-1,), (-1, 1)]))
    return Sample((x,), (target,))


def _transpose(d: Draws, dtype: DType) -> Sample:
    x = d.array(d.shape(), dtype)
    return Sample((x,), (tuple(d(st.permutations(range(x.ndim)))),))


def _broadcast_to(d: Draws, dtype: DType) -> Sample:
    sa, sb = d.shapes(2)
    return Sample((d.array(sa, dtype),), (np.broadcast_shapes(sa, sb),))


def _concatenate(d: Draws, dtype: DType) -> Sample:
    shape = d.shape(min_dims=1)
    axis = d(st.integers(-len(shape), len(shape) - 1))
    other = list(shape)
    other[axis] = d(st.integers(0, 3))
    return Sample((d.array(shape, dtype), d.array(tuple(other), dtype)), (axis,))


def _stack(d: Draws, dtype: DType) -> Sample:
    shape = d.shape()
    axis = d(st.integers(-len(shape) - 1, len(shape)))
    return Sample((d.array(shape, dtype), d.array(shape, dtype)), (axis,))


def _getitem(d: Draws, dtype: DType) -> Sample:
    x = d.array(d.shape(min_dims=1), dtype)
    n = x.shape[0]
    kind = d(st.sampled_from(["ints", "slice", "mask"]))
    index: Any
    if kind == "ints" and n > 0:  # repeats likely: the gradient must accumulate
        index = np.array(d(st.lists(st.integers(-n, n - 1), max_size=6)), dtype=np.int64)
    elif kind == "mask":
        index = np.asarray(d(hnp.arrays(np.bool_, x.shape)))
    else:
        index = (Ellipsis, slice(d(st.integers(-3, 3)), None, d(st.sampled_from([1, 2, -1]))))
    return Sample((x,), (index,))


def _torch_getitem(t: torch.Tensor, index: Any) -> torch.Tensor:
    if isinstance(index, tuple):  # (..., slice): PyTorch has no negative steps, so name the positions
        return t[..., torch.from_numpy(np.arange(t.shape[-1])[index[-1]].copy())]
    return t[torch.from_numpy(index)]


def _scatter_add(d: Draws, dtype: DType) -> Sample:
    size = d(st.integers(1, 5))
    index = np.array(d(st.lists(st.integers(0, size - 1), max_size=6)), dtype=np.int64)
    trailing = d(hnp.array_shapes(min_dims=0, max_dims=1, min_side=0, max_side=2))
    return Sample((d.array((len(index), *trailing), dtype),), (index, (size, *trailing)))


def _np_scatter_add(v: Array, index: Array, shape: tuple[int, ...]) -> Array:
    out = np.zeros(shape, dtype=v.dtype)
    np.add.at(out, index, v)
    return out


def _sum(d: Draws, dtype: DType) -> Sample:
    x = d.array(d.shape(), dtype)
    return Sample((x,), (d.axes(x.ndim), d(st.booleans())))


def _extremum(d: Draws, dtype: DType) -> Sample:
    shape = d.shape()
    axis = d.axes(len(shape))
    # A zero-size axis has no extremum (an error, tested elsewhere): give it length 1.
    reduced = set(range(len(shape))) if axis is None else {
        a % max(len(shape), 1) for a in ((axis,) if isinstance(axis, int) else axis)
    }
    shape = tuple(1 if i in reduced and s == 0 else s for i, s in enumerate(shape))
    x = d.array(shape, dtype, OFF_GRID, unique=True)  # no ties: a smooth point
    return Sample((x,), (axis, d(st.booleans())))


def _torch_reduction(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A PyTorch reduction called with NumPy's ``axis``: None is every axis, () none."""

    def reduce(t: torch.Tensor, axis: int | tuple[int, ...] | None, keepdims: bool) -> torch.Tensor:
        axes = range(t.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
        dims = tuple(a % t.ndim for a in axes) if t.ndim else ()
        # PyTorch reads an empty dim as "every axis"; NumPy reduces nothing.
        return fn(t, dims, keepdim=keepdims) if dims else t.clone()

    return reduce


def _matrix_sizes(d: Draws) -> tuple[int, int, int, Shape]:
    """``m, k, n`` of an (m, k) @ (k, n) product, 0 included, and batch axes that broadcast."""
    m, k, n = (d(st.integers(0, 4)) for _ in range(3))
    return m, k, n, d(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))


def _matmul(d: Draws, dtype: DType) -> Sample:
    m, k, n, batch = _matrix_sizes(d)
    a = d(st.sampled_from([(k,), (m, k), (*batch, m, k)]))
    b = d(st.sampled_from([(k,), (k, n), (*batch, k, n)]))
    return Sample((d.array(a, dtype), d.array(b, dtype)))


def _affine(d: Draws, dtype: DType) -> Sample:
    m, k, n, batch = _matrix_sizes(d)
    x = d(st.sampled_from([(k,), (m, k), (*batch, m, k)]))
    return Sample((d.array(x, dtype), d.array((k, n), dtype), d.array((n,), dtype)))


_TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64}
_MASK = np.array([[True, False, True], [False, True, True]])


def _np_sigmoid(a: Array) -> Array:
    return np.asarray(1 / (1 + np.exp(-a)))


# ---- the table ---------------------------------------------------------------------------
# In the order the gradient checks were first written: their fixed inputs are drawn from one
# seeded generator in this order, so a new row goes at the end.
ROWS: tuple[Op, ...] = (
    elementwise("add", tg.add, np.add, torch.add, REAL, REAL),
    elementwise("sub", tg.sub, np.subtract, torch.sub, REAL, REAL),
    elementwise("mul", tg.mul, np.multiply, torch.mul, REAL, REAL),
    elementwise("div", tg.div, np.divide, torch.div, REAL, NONZERO),
    elementwise(
        "pow", tg.pow, np.power, torch.pow, POSITIVE, REAL,
        sample=_pow,
        grad=(
            *pointwise_cases("pow", tg.pow, (POSITIVE, REAL)),
            GradCase("pow-int-exponent-negative-base", lambda x: x**3, (randn(2, 3),)),
            GradCase("pow-float-exponent", lambda x: x**2.5, (positive(4),)),
            GradCase("rpow", lambda x: 2.0**x, (randn(3),)),
            # Small integer exponents at x = 0 (x**0 once had a NaN gradient there), and a
            # tensor exponent of 0, whose mixed second derivative d/db d/da is 1/a.
            *(GradCase(f"pow-exponent-{k}-at-zero", lambda x, k=k: x**k, (tg.tensor([0.0, -0.7, 1.3]),)) for k in (0, 1, 2, 3)),
            GradCase("pow-tensor-exponent-zero", lambda a, b: a**b, (tg.tensor(np.array([0.5, 1.3, 2.0])), tg.tensor(np.zeros(3)))),
        ),
    ),
    elementwise("maximum", tg.maximum, np.maximum, torch.maximum, GRID, OFF_GRID, torch_at_kinks=True),
    elementwise("minimum", tg.minimum, np.minimum, torch.minimum, GRID, OFF_GRID, torch_at_kinks=True),
    elementwise("neg", tg.neg, np.negative, torch.neg, REAL),
    elementwise("exp", tg.exp, np.exp, torch.exp, REAL),
    elementwise("log", tg.log, np.log, torch.log, POSITIVE),
    elementwise("sqrt", tg.sqrt, np.sqrt, torch.sqrt, POSITIVE),
    elementwise("abs", tg.abs, np.abs, torch.abs, SMOOTH, torch_at_kinks=True),
    elementwise("relu", tg.nn.relu, lambda a: np.maximum(a, 0), torch.relu, SMOOTH, torch_at_kinks=True),
    elementwise("tanh", tg.tanh, np.tanh, torch.tanh, REAL),
    elementwise("sigmoid", tg.sigmoid, _np_sigmoid, torch.sigmoid, REAL),
    elementwise("sin", tg.sin, np.sin, torch.sin, REAL),
    elementwise("cos", tg.cos, np.cos, torch.cos, REAL),
    # At a bound PyTorch picks another (equally valid) subgradient: parity stays off the bounds.
    Op("clip", tg.clip, np.clip, torch.clamp, _clip, (
        GradCase("clip-both", lambda x: tg.clip(x, -0.5, 0.5) * x, (tg.tensor([-1.2, -0.3, 0.1, 0.4, 0.9]),)),
        GradCase("clip-min", lambda x: tg.clip(x, min=0.0) ** 2, (tg.tensor([[-1.0, 0.7], [1.5, -0.2]]),)),
        GradCase("clip-max", lambda x: x.clip(max=1.0) * x, (tg.tensor(0.3),)),
    )),
    Op("where", tg.where, np.where, torch.where, _where, (
        GradCase("where-same-shape", lambda c, x, y: tg.where(c, x * x, y), (tg.tensor(_MASK), randn(2, 3), randn(2, 3))),
        GradCase("where-broadcast", lambda c, x, y: tg.where(c, x, y * y), (tg.tensor(_MASK), randn(3), randn())),
        GradCase("where-scalar-branch", lambda x: tg.where(x > 0, x**2, 0.0), (nonzero(2, 3),)),
    )),
    Op(
        "cast", tg.cast, lambda a, dtype: a.astype(dtype), lambda t, dtype: t.to(_TORCH_DTYPES[dtype]), _cast,
        (
            GradCase("cast-to-float32", lambda x: tg.cast(x, np.float32) * 3.0, (randn(2, 3),), eps=1e-2, tol=1e-4),
            GradCase(
                "cast-there-and-back",
                lambda x: x.astype(np.float32).astype(np.float64) * x,
                (randn(3),),
                eps=1e-2,
                tol=1e-4,
            ),
        ),
        # Drawn in float64, the cast goes to float32: finite differences need a wide step.
        tol=Tolerances(fd_eps=1e-2, fd=(1e-4, 1e-4)),
    ),
    Op("copy", tg.copy, np.copy, torch.clone, pointwise(REAL), (GradCase("copy", lambda x: tg.copy(x) * x, (randn(2, 3),)),)),
    Op("reshape", tg.reshape, np.reshape, torch.reshape, _reshape, (
        GradCase("reshape", lambda x: tg.reshape(x, (3, 2)) ** 2, (randn(2, 3),)),
        GradCase("reshape-minus-one", lambda x: x.reshape(-1, 2) * x.reshape(3, 2), (randn(6),)),
        GradCase("reshape-0d", lambda x: x.reshape(1, 1) * x, (randn(),)),
    )),
    Op("transpose", tg.transpose, np.transpose, torch.permute, _transpose, (
        GradCase("T", lambda x: x.T * x.T, (randn(2, 3, 4),)),
        GradCase("transpose-axes", lambda x: tg.transpose(x, (1, 2, 0)) ** 2, (randn(2, 3, 4),)),
    )),
    Op("broadcast_to", tg.broadcast_to, np.broadcast_to, torch.broadcast_to, _broadcast_to, (
        GradCase("broadcast-1d", lambda x: tg.broadcast_to(x, (2, 3)) ** 2, (randn(3),)),
        GradCase("broadcast-0d", lambda x: tg.broadcast_to(x, (2, 2)) ** 2, (randn(),)),
        GradCase("broadcast-ones", lambda x: tg.broadcast_to(x, (4, 2, 3)) ** 2, (randn(2, 1),)),
    )),
    Op(
        "concatenate",
        lambda a, b, axis: tg.concatenate([a, b], axis),
        lambda a, b, axis: np.concatenate([a, b], axis),
        lambda a, b, axis: torch.cat([a, b], axis),
        _concatenate,
        (
            GradCase("concatenate-axis0", lambda a, b: tg.concatenate([a, b]) ** 2, (randn(2, 3), randn(1, 3))),
            GradCase("concatenate-axis-1", lambda a, b: tg.concatenate((a, b * b), axis=-1), (randn(2, 1), randn(2, 3))),
            GradCase("concatenate-reused", lambda a: tg.concatenate([a, a * a, a]), (randn(3),)),
        ),
    ),
    Op(
        "stack",
        lambda a, b, axis: tg.stack([a, b], axis),
        lambda a, b, axis: np.stack([a, b], axis),
        lambda a, b, axis: torch.stack([a, b], axis),
        _stack,
        (
            GradCase("stack-axis0", lambda a, b: tg.stack([a, b * a]), (randn(3), randn(3))),
            GradCase("stack-axis-1", lambda a, b: tg.stack([a * a, b], axis=-1), (randn(2, 3), randn(2, 3))),
            GradCase("stack-0d", lambda a, b: tg.stack([a, b, a * b]), (randn(), randn())),
        ),
    ),
    Op("getitem", lambda t, index: t[index], lambda a, index: a[index], _torch_getitem, _getitem, (
        GradCase("slices", lambda x: x[1:, ::2] ** 2, (randn(3, 4),)),
        GradCase("int", lambda x: x[1] * x[-1], (randn(3, 2),)),
        GradCase("int-array-repeats", lambda x: x[np.array([0, 2, 0, 0])] ** 2, (randn(3, 2),)),
        GradCase("tensor-index-repeats", lambda x: x[:, tg.tensor([1, 1, 0])] ** 2, (randn(2, 3),)),
        GradCase("bool-mask", lambda x: x[_MASK] ** 2, (randn(2, 3),)),
        GradCase("bool-tensor-mask", lambda x: x[x > 0] ** 2, (nonzero(2, 3),)),
        GradCase("none-ellipsis", lambda x: x[None, ..., 1] ** 2, (randn(2, 3),)),
        GradCase("two-int-arrays", lambda x: x[[0, 1, 1], [2, 0, 2]] ** 2, (randn(2, 3),)),
        GradCase("list-then-slice", lambda x: x[[1, 1, 0], 1:] ** 2, (randn(2, 3),)),
    )),
    Op(
        "scatter_add",
        scatter_add,
        _np_scatter_add,
        lambda v, index, shape: torch.zeros(shape, dtype=v.dtype).index_add(0, torch.from_numpy(index), v),
        _scatter_add,
        (
            GradCase("scatter-repeats", lambda v: scatter_add(v * v, np.array([2, 0, 2]), (4,)), (randn(3),)),
            GradCase("scatter-basic", lambda v: scatter_add(v * v, (slice(1, 3),), (4, 2), advanced=False), (randn(2, 2),)),
        ),
    ),
    Op(
        "sum",
        tg.sum,
        lambda a, axis, keepdims: np.sum(a, axis, keepdims=keepdims),
        _torch_reduction(torch.sum),
        _sum,
        (
            GradCase("sum-all", lambda x: (x * x).sum(), (randn(2, 3),)),
            GradCase("sum-axis", lambda x: (x * x).sum(axis=0), (randn(2, 3),)),
            GradCase("sum-axes-keepdims", lambda x: tg.sum(x * x, (0, 2), keepdims=True), (randn(2, 3, 4),)),
            GradCase("sum-negative-axis", lambda x: tg.sum(x**3, -1), (randn(2, 3),)),
            GradCase("sum-0d", lambda x: tg.sum(x * x), (randn(),)),
        ),
    ),
    Op(
        "max",
        tg.max,
        lambda a, axis, keepdims: np.max(a, axis, keepdims=keepdims),
        _torch_reduction(torch.amax),
        _extremum,
        (
            GradCase("max-all", lambda x: x.max() * x, (distinct(2, 3),)),
            GradCase("max-axis", lambda x: (x * x).max(axis=1), (distinct(2, 3),)),
            GradCase("max-axes-keepdims", lambda x: tg.max(x, (0, 2), keepdims=True) ** 2, (distinct(2, 3, 4),)),
        ),
        torch_at_kinks=True,
    ),
    Op(
        "min",
        tg.min,
        lambda a, axis, keepdims: np.min(a, axis, keepdims=keepdims),
        _torch_reduction(torch.amin),
        _extremum,
        (
            GradCase("min-all", lambda x: x.min() * x, (distinct(2, 3),)),
            GradCase("min-axis-keepdims", lambda x: tg.min(x, -1, keepdims=True) * x, (distinct(3, 4),)),
        ),
        torch_at_kinks=True,
    ),
    Op(
        "affine",
        tg.affine,
        lambda x, w, b: np.matmul(x, w) + b,
        lambda x, w, b: torch.nn.functional.linear(x, w.T, b),
        _affine,
        (
            GradCase("matrix-bias", lambda x, w, b: tg.affine(x, w, b), (randn(3, 4), randn(4, 5), randn(5))),
            GradCase("batched-bias", lambda x, w, b: tg.affine(x, w, b), (randn(2, 3, 4), randn(4, 5), randn(5))),
            GradCase("vector-no-bias", lambda x, w: tg.affine(x, w), (randn(4), randn(4, 5))),
        ),
    ),
    Op("matmul", tg.matmul, np.matmul, torch.matmul, _matmul, (
        GradCase("matrix", lambda a, b: a @ b, (randn(3, 4), randn(4, 5))),
        GradCase("batched", lambda a, b: a @ b, (randn(2, 3, 4), randn(2, 4, 5))),
        GradCase("batch-broadcast", lambda a, b: tg.matmul(a, b), (randn(2, 1, 3, 4), randn(5, 4, 2))),
        GradCase("batch-times-matrix", lambda a, b: a @ b, (randn(2, 3, 4), randn(4, 5))),
        GradCase("vector-matrix", lambda a, b: a @ b, (randn(4), randn(4, 5))),
        GradCase("matrix-vector", lambda a, b: a @ b, (randn(3, 4), randn(4))),
        GradCase("vector-vector", lambda a, b: a @ b, (randn(4), randn(4))),
        GradCase("vector-batch", lambda a, b: a @ b, (randn(4), randn(2, 4, 5))),
        GradCase("batch-vector", lambda a, b: a @ b, (randn(2, 3, 4), randn(4))),
        GradCase("squared", lambda a: (a @ a) @ a, (randn(3, 3),)),
    )),
)

OPS: dict[str, Op] = {row.name: row for row in ROWS}
