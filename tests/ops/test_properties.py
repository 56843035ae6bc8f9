"""Properties that every primitive must have, on inputs drawn by Hypothesis.

`OPS` holds one example generator per primitive, keyed by its name in
`tapegrad.PRIMITIVES`; a meta-test fails when a registered primitive has none.
Shapes include 0-d, size-0 and broadcasting pairs, in float32 and float64.
For every primitive:

- the forward value matches NumPy's, in NumPy's dtype;
- the gradient matches central finite differences (float64);
- the backward rule is linear in the cotangent;
- nothing is mutated: neither the inputs nor the cotangent;
- gradients own their memory: none aliases another, an input or the cotangent;
- each gradient has its source's dtype, also when float32 meets float64.

Two more properties cover pytrees: flatten/unflatten is the identity, and
`Tape.gradient` returns exactly the structure of its ``sources``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapegrad as tg
from tapegrad import Tensor, tree
from tapegrad._core._shape import scatter_add
from tapegrad.testing import check_grads

T = TypeVar("T")
Shape = tuple[int, ...]
Array = np.ndarray[Any, np.dtype[Any]]
DType = type[np.floating[Any]]
FLOATS: list[DType] = [np.float32, np.float64]


class Draw(Protocol):
    """`data.draw`: a strategy in, one of its values out."""

    def __call__(self, strategy: st.SearchStrategy[T], /) -> T: ...


@attrs.frozen
class Example:
    """One drawn example: the op in tapegrad and in NumPy, and its inputs.

    Floating arrays in ``args`` are differentiated; others (a boolean
    condition) are held fixed.
    """

    tg_fn: Callable[..., Tensor]
    np_fn: Callable[..., Any]
    args: tuple[Array, ...]
    # The op rounds to float32 on the way (a cast): finite differences need a wide step.
    lossy: bool = False


Generator = Callable[[Draw, DType], Example]


# ---- drawing inputs ------------------------------------------------------------------
def _grid(step: float, offset: float = 0.0) -> st.SearchStrategy[float]:
    """Multiples of ``step`` in [-5, 5] plus ``offset``: exact in float32, no accidental ties."""
    n = int(5 / step)
    return st.integers(-n, n).map(lambda k: k * step + offset)


def _elements(domain: str) -> st.SearchStrategy[float]:
    if domain == "positive":  # log, sqrt and the base of a tensor power
        return st.floats(0.25, 3.0, width=32)
    if domain == "nonzero":  # denominators
        return st.floats(0.25, 3.0, width=32) | st.floats(-3.0, -0.25, width=32)
    if domain == "grid":  # maximum's left operand
        return _grid(0.25)
    if domain == "off-grid":  # never equal to a grid value, nor 0, -0.5 or 1.0 (kinks)
        return _grid(0.25, 0.125)
    return st.floats(-3.0, 3.0, width=32)


def _array(d: Draw, shape: Shape, dtype: DType, domain: str = "real", unique: bool = False) -> Array:
    return np.asarray(d(hnp.arrays(dtype, shape, elements=_elements(domain), unique=unique)))


def _shape(d: Draw, min_dims: int = 0) -> Shape:
    return d(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=0, max_side=3))


def _shapes(d: Draw, n: int) -> tuple[Shape, ...]:
    drawn = d(hnp.mutually_broadcastable_shapes(num_shapes=n, max_dims=3, min_side=0, max_side=3))
    return tuple(drawn.input_shapes)


def _axes(d: Draw, ndim: int) -> int | tuple[int, ...] | None:
    if ndim == 0:
        return d(st.sampled_from([None, 0, -1]))
    single = st.integers(-ndim, ndim - 1)
    several = st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim).map(tuple)
    return d(st.none() | single | several)


def _reduced(axis: int | tuple[int, ...] | None, ndim: int) -> set[int]:
    if axis is None:
        return set(range(ndim))
    return {a % max(ndim, 1) for a in ((axis,) if isinstance(axis, int) else axis)}


# ---- the table -----------------------------------------------------------------------
def unary(tg_fn: Callable[..., Tensor], np_fn: Callable[..., Any], domain: str = "real") -> Generator:
    def draw(d: Draw, dtype: DType) -> Example:
        return Example(tg_fn, np_fn, (_array(d, _shape(d), dtype, domain),))

    return draw


def binary(
    tg_fn: Callable[..., Tensor], np_fn: Callable[..., Any], domain_a: str = "real", domain_b: str = "real"
) -> Generator:
    def draw(d: Draw, dtype: DType) -> Example:
        sa, sb = _shapes(d, 2)
        return Example(tg_fn, np_fn, (_array(d, sa, dtype, domain_a), _array(d, sb, dtype, domain_b)))

    return draw


def _sigmoid(a: Array) -> Array:
    return np.asarray(1 / (1 + np.exp(-a)))


def _clip(d: Draw, dtype: DType) -> Example:
    lo, hi = d(st.sampled_from([(-0.5, 1.0), (-0.5, None), (None, 1.0)]))
    x = _array(d, _shape(d), dtype, "off-grid")
    return Example(lambda t: tg.clip(t, lo, hi), lambda a: np.clip(a, lo, hi), (x,))


def _where(d: Draw, dtype: DType) -> Example:
    sc, sx, sy = _shapes(d, 3)
    c = np.asarray(d(hnp.arrays(np.bool_, sc)))
    return Example(tg.where, np.where, (c, _array(d, sx, dtype), _array(d, sy, dtype)))


def _pow(d: Draw, dtype: DType) -> Example:
    """A tensor exponent over a positive base, or a small integer one over a base with zeros."""
    if d(st.booleans()):
        return binary(tg.pow, np.power, domain_a="positive")(d, dtype)
    k = d(st.sampled_from([-2, -1, 0, 1, 2, 3]))
    # x**0 once had a NaN gradient at x = 0; negative powers are drawn away from their pole.
    elements = _elements("nonzero") if k < 0 else st.just(0.0) | _elements("real")
    x = np.asarray(d(hnp.arrays(dtype, _shape(d), elements=elements)))
    return Example(lambda t: t**k, lambda a: np.power(a, k), (x,))


def _cast(d: Draw, dtype: DType) -> Example:
    other = np.float64 if dtype == np.float32 else np.float32
    x = _array(d, _shape(d), dtype)
    return Example(lambda t: tg.cast(t, other), lambda a: a.astype(other), (x,), lossy=other == np.float32)


def _reshape(d: Draw, dtype: DType) -> Example:
    x = _array(d, _shape(d), dtype)
    target = x.shape[::-1]
    return Example(lambda t: tg.reshape(t, target), lambda a: a.reshape(target), (x,))


def _transpose(d: Draw, dtype: DType) -> Example:
    x = _array(d, _shape(d), dtype)
    perm = tuple(d(st.permutations(range(x.ndim))))
    return Example(lambda t: tg.transpose(t, perm), lambda a: a.transpose(perm), (x,))


def _broadcast_to(d: Draw, dtype: DType) -> Example:
    sa, sb = _shapes(d, 2)
    target = np.broadcast_shapes(sa, sb)
    return Example(
        lambda t: tg.broadcast_to(t, target), lambda a: np.broadcast_to(a, target), (_array(d, sa, dtype),)
    )


def _concatenate(d: Draw, dtype: DType) -> Example:
    shape = _shape(d, min_dims=1)
    axis = d(st.integers(-len(shape), len(shape) - 1))
    other = list(shape)
    other[axis] = d(st.integers(0, 3))
    args = (_array(d, shape, dtype), _array(d, tuple(other), dtype))
    return Example(
        lambda a, b: tg.concatenate([a, b], axis), lambda a, b: np.concatenate([a, b], axis), args
    )


def _stack(d: Draw, dtype: DType) -> Example:
    shape = _shape(d)
    axis = d(st.integers(-len(shape) - 1, len(shape)))
    args = (_array(d, shape, dtype), _array(d, shape, dtype))
    return Example(lambda a, b: tg.stack([a, b], axis), lambda a, b: np.stack([a, b], axis), args)


def _getitem(d: Draw, dtype: DType) -> Example:
    x = _array(d, _shape(d, min_dims=1), dtype)
    n = x.shape[0]
    kind = d(st.sampled_from(["ints", "slice", "mask"]))
    index: Any
    if kind == "ints" and n > 0:  # repeats likely: the gradient must accumulate
        index = np.array(d(st.lists(st.integers(-n, n - 1), max_size=5)), dtype=np.int64)
    elif kind == "mask":
        index = np.asarray(d(hnp.arrays(np.bool_, x.shape)))
    else:
        index = (Ellipsis, slice(d(st.integers(-3, 3)), None, d(st.sampled_from([1, 2, -1]))))
    return Example(lambda t: t[index], lambda a: a[index], (x,))


def _scatter_add(d: Draw, dtype: DType) -> Example:
    size = d(st.integers(1, 4))
    index = np.array(d(st.lists(st.integers(0, size - 1), max_size=5)), dtype=np.int64)
    trailing = d(hnp.array_shapes(min_dims=0, max_dims=1, min_side=0, max_side=2))
    values = _array(d, (len(index), *trailing), dtype)

    def reference(v: Array) -> Array:
        out = np.zeros((size, *trailing), dtype=v.dtype)
        np.add.at(out, index, v)
        return out

    return Example(lambda v: scatter_add(v, index, (size, *trailing)), reference, (values,))


def _sum(d: Draw, dtype: DType) -> Example:
    x = _array(d, _shape(d), dtype)
    axis = _axes(d, x.ndim)
    keepdims = d(st.booleans())
    return Example(lambda t: tg.sum(t, axis, keepdims), lambda a: a.sum(axis, keepdims=keepdims), (x,))


def _extremum(name: str) -> Generator:
    def draw(d: Draw, dtype: DType) -> Example:
        shape = _shape(d)
        axis = _axes(d, len(shape))
        # A zero-size axis has no extremum (an error, tested elsewhere): give it length 1.
        reduced = _reduced(axis, len(shape))
        shape = tuple(1 if i in reduced and s == 0 else s for i, s in enumerate(shape))
        x = _array(d, shape, dtype, "off-grid", unique=True)  # no ties: a smooth point
        keepdims = d(st.booleans())
        op = getattr(tg, name)
        return Example(lambda t: op(t, axis, keepdims), lambda a: getattr(a, name)(axis, keepdims=keepdims), (x,))

    return draw


def _matmul(d: Draw, dtype: DType) -> Example:
    m, k, n = (d(st.integers(0, 3)) for _ in range(3))
    batch = d(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=2))
    a_shape = d(st.sampled_from([(k,), (m, k), (*batch, m, k)]))
    b_shape = d(st.sampled_from([(k,), (k, n), (*batch, k, n)]))
    return Example(tg.matmul, np.matmul, (_array(d, a_shape, dtype), _array(d, b_shape, dtype)))


def _affine(d: Draw, dtype: DType) -> Example:
    m, k, n = (d(st.integers(0, 3)) for _ in range(3))
    batch = d(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=2))
    x_shape = d(st.sampled_from([(k,), (m, k), (*batch, m, k)]))
    return Example(
        tg.affine,
        lambda x, w, b: np.matmul(x, w) + b,
        (_array(d, x_shape, dtype), _array(d, (k, n), dtype), _array(d, (n,), dtype)),
    )


OPS: dict[str, Generator] = {
    "add": binary(tg.add, np.add),
    "sub": binary(tg.sub, np.subtract),
    "mul": binary(tg.mul, np.multiply),
    "div": binary(tg.div, np.divide, domain_b="nonzero"),
    "pow": _pow,
    "maximum": binary(tg.maximum, np.maximum, "grid", "off-grid"),
    "minimum": binary(tg.minimum, np.minimum, "grid", "off-grid"),
    "neg": unary(tg.neg, np.negative),
    "exp": unary(tg.exp, np.exp),
    "log": unary(tg.log, np.log, "positive"),
    "sqrt": unary(tg.sqrt, np.sqrt, "positive"),
    "abs": unary(tg.abs, np.abs, "off-grid"),
    "relu": unary(tg.nn.relu, lambda a: np.maximum(a, 0), "off-grid"),
    "tanh": unary(tg.tanh, np.tanh),
    "sigmoid": unary(tg.sigmoid, _sigmoid),
    "sin": unary(tg.sin, np.sin),
    "cos": unary(tg.cos, np.cos),
    "clip": _clip,
    "where": _where,
    "cast": _cast,
    "copy": unary(tg.copy, np.copy),
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": _broadcast_to,
    "concatenate": _concatenate,
    "stack": _stack,
    "getitem": _getitem,
    "scatter_add": _scatter_add,
    "sum": _sum,
    "max": _extremum("max"),
    "min": _extremum("min"),
    "matmul": _matmul,
    "affine": _affine,
}
NAMES = sorted(OPS)


def test_every_primitive_has_a_property_generator() -> None:
    missing = sorted(set(tg.PRIMITIVES) - set(OPS))
    stale = sorted(set(OPS) - set(tg.PRIMITIVES))
    assert missing == [], f"primitives without a generator in OPS: {missing}"
    assert stale == [], f"generators for names that are not primitives: {stale}"


# ---- helpers -------------------------------------------------------------------------
def _differentiable(args: Sequence[Array]) -> list[int]:
    return [i for i, a in enumerate(args) if a.dtype.kind == "f"]


def _run(
    example: Example, cotangents: Sequence[Array], xs: list[Tensor] | None = None
) -> tuple[Tensor, list[list[Tensor]], list[Tensor]]:
    """The output, and the gradients for each cotangent, from one persistent tape."""
    xs = [tg.tensor(a) for a in example.args] if xs is None else xs
    sources = [xs[i] for i in _differentiable(example.args)]
    with tg.Tape(persistent=True) as tape:
        out = example.tg_fn(*xs)
    grads = [list(tape.gradient(out, sources, output_gradients=tg.tensor(g))) for g in cotangents]
    tape.close()
    return out, grads, sources


def _drawn(name: str, data: st.DataObject) -> Example:
    """An example of op ``name`` in a drawn float dtype."""
    return OPS[name](data.draw, data.draw(st.sampled_from(FLOATS)))


def _cotangent(d: Draw, out: Tensor) -> Array:
    return _array(d, out.shape, out.dtype.type)


def _tolerance(*dtypes: np.dtype[Any]) -> tuple[float, float]:
    """``(rtol, atol)`` for round-off in the least precise of ``dtypes``."""
    return (1e-4, 1e-4) if np.float32 in dtypes else (1e-10, 1e-12)


# ---- every primitive ---------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25)
@given(data=st.data())
def test_forward_matches_numpy(name: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(FLOATS))
    example = OPS[name](data.draw, dtype)
    out = example.tg_fn(*(tg.tensor(a) for a in example.args))
    expected = np.asarray(example.np_fn(*example.args))
    assert out.dtype == expected.dtype
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_gradients_match_finite_differences(name: str, data: st.DataObject) -> None:
    example = OPS[name](data.draw, np.float64)
    args = [tg.tensor(a) for a in example.args]
    if example.lossy:
        check_grads(example.tg_fn, args, order=1, eps=1e-2, rtol=1e-4, atol=1e-4)
    else:
        check_grads(example.tg_fn, args, order=1, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_backward_rule_is_linear_in_the_cotangent(name: str, data: st.DataObject) -> None:
    example = _drawn(name, data)
    out = example.tg_fn(*(tg.tensor(a) for a in example.args))
    g1, g2 = _cotangent(data.draw, out), _cotangent(data.draw, out)
    a = out.dtype.type(data.draw(st.floats(-2.0, 2.0, width=32)))
    _, (v1, v2, combined), _ = _run(example, [g1, g2, a * g1 + g2])
    for x1, x2, x12 in zip(v1, v2, combined):
        rtol, atol = _tolerance(x12.dtype, out.dtype)
        np.testing.assert_allclose(x12.numpy(), a * x1.numpy() + x2.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_nothing_is_mutated_and_gradients_own_their_memory(name: str, data: st.DataObject) -> None:
    example = _drawn(name, data)
    xs = [tg.tensor(a) for a in example.args]
    before = [x.data.copy() for x in xs]
    cotangent = _cotangent(data.draw, example.tg_fn(*xs))
    seed = cotangent.copy()
    out, (grads,), _ = _run(example, [cotangent], xs)
    for x, old in zip(xs, before):
        assert x.data.dtype == old.dtype and x.data.tobytes() == old.tobytes(), "an input was mutated"
    assert cotangent.tobytes() == seed.tobytes(), "the cotangent was mutated"
    others = [x.data for x in xs] + [cotangent, out.data]
    for i, g in enumerate(grads):
        for j, h in enumerate(grads):
            assert i == j or not np.shares_memory(g.data, h.data), f"gradients {i} and {j} alias"
        for k, arr in enumerate(others):
            assert not np.shares_memory(g.data, arr), f"gradient {i} aliases argument {k}"


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_each_gradient_has_its_source_dtype(name: str, data: st.DataObject) -> None:
    example = OPS[name](data.draw, np.float64)
    # The sources share one drawn dtype (floats of different widths never mix
    # silently); a float64 scale after an explicit cast sends a float64
    # cotangent back to float32 sources.
    dtype = data.draw(st.sampled_from(FLOATS))
    xs = [tg.tensor(a.astype(dtype) if a.dtype.kind == "f" else a) for a in example.args]
    sources = [xs[i] for i in _differentiable(example.args)]
    scale = tg.tensor(np.float64(1.5))
    with tg.Tape() as tape:
        out = example.tg_fn(*xs).astype(np.float64) * scale
    grads = tape.gradient(out, sources, output_gradients=tg.tensor(np.ones(out.shape)))
    for g, x in zip(grads, sources):
        assert g.dtype == x.dtype and g.shape == x.shape


# ---- pytrees ---------------------------------------------------------------------------------
@attrs.frozen
class Record:
    """A frozen attrs record: a pytree node with two fields."""

    left: Any
    right: Any


def _trees(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return (
            st.lists(children, max_size=3)
            | st.lists(children, max_size=3).map(tuple)
            | st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), children, max_size=3)
            | st.builds(Record, children, children)
        )

    return st.recursive(leaves | st.none(), extend, max_leaves=10)


def _same_types(a: Any, b: Any) -> bool:
    """The same container types all the way down (``[1] == (1,)`` is False, but ``1 == 1.0``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, Record):
        return _same_types(a.left, b.left) and _same_types(a.right, b.right)
    return True


@settings(max_examples=50)
@given(value=_trees(st.integers()))
def test_flatten_then_unflatten_is_the_identity(value: Any) -> None:
    leaves, treedef = tree.flatten(value)
    rebuilt = tree.unflatten(treedef, leaves)
    assert rebuilt == value and _same_types(rebuilt, value)
    assert tree.structure(rebuilt) == treedef


_twos = hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=2).map(
    lambda s: tg.tensor(np.full(s, 2.0, dtype=np.float32))
)


@settings(max_examples=30)
@given(sources=_trees(_twos))
def test_gradient_returns_the_structure_of_its_sources(sources: Any) -> None:
    shape_leaves = [x.shape for x in tree.leaves(sources)]
    with tg.Tape() as tape:
        total = tg.tensor(np.float32(0.0))
        for x in tree.leaves(sources):
            total = total + (x * x).sum()
    grads = tape.gradient(total, sources)
    assert tree.structure(grads) == tree.structure(sources)
    assert _same_types(grads, sources)
    for g, s in zip(tree.leaves(grads), shape_leaves):
        assert isinstance(g, Tensor) and g.dtype == np.float32
        np.testing.assert_array_equal(g.numpy(), np.full(s, 4.0, dtype=np.float32))
