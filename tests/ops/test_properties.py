"""Properties that every primitive must have, on inputs drawn by Hypothesis.

Each primitive's inputs come from its row in the op table (`table.py`): its
sampler draws shapes that include 0-d, size-0 and broadcasting pairs, in float32
and float64, and `test_table.py` fails when a registered primitive has no row.
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

from collections.abc import Sequence
from typing import Any

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tapegrad as tg
from tapegrad import Tensor, tree
from tapegrad.testing import check_grads

from ._inputs import FLOATS, Array, Draw, Draws, Sample
from .table import OPS, Op

NAMES = sorted(OPS)


# ---- helpers -------------------------------------------------------------------------
def _differentiable(args: Sequence[Array]) -> list[int]:
    return [i for i, a in enumerate(args) if a.dtype.kind == "f"]


def _call(row: Op, sample: Sample, xs: Sequence[Tensor]) -> Tensor:
    return row.tg_fn(*xs, *sample.params)


def _run(
    row: Op, sample: Sample, cotangents: Sequence[Array], xs: list[Tensor] | None = None
) -> tuple[Tensor, list[list[Tensor]], list[Tensor]]:
    """The output, and the gradients for each cotangent, from one persistent tape."""
    xs = [tg.tensor(a) for a in sample.arrays] if xs is None else xs
    sources = [xs[i] for i in _differentiable(sample.arrays)]
    with tg.Tape(persistent=True) as tape:
        out = _call(row, sample, xs)
    grads = [list(tape.gradient(out, sources, output_gradients=tg.tensor(g))) for g in cotangents]
    tape.close()
    return out, grads, sources


def _drawn(row: Op, data: st.DataObject) -> Sample:
    """A sample of ``row``'s op in a drawn float dtype."""
    return row.sample(Draws(data.draw), data.draw(st.sampled_from(FLOATS)))


def _cotangent(d: Draw, out: Tensor) -> Array:
    return Draws(d).array(out.shape, out.dtype.type)


def _tolerance(*dtypes: np.dtype[Any]) -> tuple[float, float]:
    """``(rtol, atol)`` for round-off in the least precise of ``dtypes``."""
    return (1e-4, 1e-4) if np.float32 in dtypes else (1e-10, 1e-12)


# ---- every primitive ---------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=25)
@given(data=st.data())
def test_forward_matches_numpy(name: str, data: st.DataObject) -> None:
    row = OPS[name]
    dtype = data.draw(st.sampled_from(FLOATS))
    sample = row.sample(Draws(data.draw), dtype)
    out = _call(row, sample, [tg.tensor(a) for a in sample.arrays])
    expected = np.asarray(row.np_fn(*sample.arrays, *sample.params))
    assert out.dtype == expected.dtype
    assert out.shape == expected.shape
    rtol = row.tol.numpy_float32 if dtype == np.float32 else row.tol.numpy_float64
    np.testing.assert_allclose(out.numpy(), expected, rtol=rtol)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_gradients_match_finite_differences(name: str, data: st.DataObject) -> None:
    row = OPS[name]
    sample = row.sample(Draws(data.draw), np.float64)
    rtol, atol = row.tol.fd
    check_grads(
        lambda *xs: _call(row, sample, xs),
        [tg.tensor(a) for a in sample.arrays],
        order=1,
        eps=row.tol.fd_eps,
        rtol=rtol,
        atol=atol,
    )


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_backward_rule_is_linear_in_the_cotangent(name: str, data: st.DataObject) -> None:
    row = OPS[name]
    sample = _drawn(row, data)
    out = _call(row, sample, [tg.tensor(a) for a in sample.arrays])
    g1, g2 = _cotangent(data.draw, out), _cotangent(data.draw, out)
    a = out.dtype.type(data.draw(st.floats(-2.0, 2.0, width=32)))
    _, (v1, v2, combined), _ = _run(row, sample, [g1, g2, a * g1 + g2])
    for x1, x2, x12 in zip(v1, v2, combined):
        rtol, atol = _tolerance(x12.dtype, out.dtype)
        np.testing.assert_allclose(x12.numpy(), a * x1.numpy() + x2.numpy(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=15)
@given(data=st.data())
def test_nothing_is_mutated_and_gradients_own_their_memory(name: str, data: st.DataObject) -> None:
    row = OPS[name]
    sample = _drawn(row, data)
    xs = [tg.tensor(a) for a in sample.arrays]
    before = [x.data.copy() for x in xs]
    cotangent = _cotangent(data.draw, _call(row, sample, xs))
    seed = cotangent.copy()
    out, (grads,), _ = _run(row, sample, [cotangent], xs)
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
    row = OPS[name]
    sample = row.sample(Draws(data.draw), np.float64)
    # The sources share one drawn dtype (floats of different widths never mix
    # silently); a float64 scale after an explicit cast sends a float64
    # cotangent back to float32 sources.
    dtype = data.draw(st.sampled_from(FLOATS))
    xs = [tg.tensor(a.astype(dtype) if a.dtype.kind == "f" else a) for a in sample.arrays]
    sources = [xs[i] for i in _differentiable(sample.arrays)]
    scale = tg.tensor(np.float64(1.5))
    with tg.Tape() as tape:
        out = _call(row, sample, xs).astype(np.float64) * scale
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
