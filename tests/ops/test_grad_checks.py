"""Every primitive's rule, and its rule's rule, against central finite differences.

`check_grads(order=2)` compares the tape's first and second directional
derivatives with float64 finite differences. Each primitive has its cases in
`CASES`, keyed by its name in `tapegrad.PRIMITIVES`; a meta-test fails when a
registered primitive has none. Inputs stay away from kinks (``abs`` at 0, ties
in ``max``, ``clip``'s bounds), where a finite difference means nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tensor
from tapegrad._core._shape import scatter_add
from tapegrad.testing import check_grads

_rng = np.random.default_rng(20240601)


def randn(*shape: int) -> Tensor:
    """Standard normal values."""
    return tg.tensor(_rng.standard_normal(shape))


def positive(*shape: int) -> Tensor:
    """Values in [0.5, 2]: safe for log, sqrt, division and a tensor exponent's base."""
    return tg.tensor(_rng.uniform(0.5, 2.0, shape))


def nonzero(*shape: int) -> Tensor:
    """Values with 0.3 <= |x| <= 2: away from the kink of abs and the pole of 1/x."""
    signs = _rng.choice([-1.0, 1.0], shape)
    return tg.tensor(signs * _rng.uniform(0.3, 2.0, shape))


def distinct(*shape: int) -> Tensor:
    """Values on a grid of step 0.1, all different: maxima and minima have no ties."""
    grid = np.arange(-20, 21) * 0.1
    return tg.tensor(_rng.choice(grid, int(np.prod(shape)), replace=False).reshape(shape))


def off_grid(*shape: int) -> Tensor:
    """Like `distinct`, shifted half a step: never equal to a `distinct` value."""
    return distinct(*shape) + 0.05


@attrs.frozen
class Case:
    """One gradient check: ``fn(*args)``, with an id for the test report."""

    id: str
    fn: Callable[..., Tensor]
    args: tuple[Any, ...]
    # Casts to float32 lose digits, so they need a wider step and looser tolerance.
    eps: float = 1e-6
    tol: float = 1e-5


# Shape pairs that broadcast, 0-d included.
BROADCAST_PAIRS: list[tuple[tuple[int, ...], tuple[int, ...]]] = [
    ((), ()),
    ((3,), ()),
    ((), (2, 3)),
    ((2, 3), (3,)),
    ((2, 1), (1, 3)),
    ((4, 1, 3), (2, 1)),
]
UNARY_SHAPES: list[tuple[int, ...]] = [(), (3,), (2, 3)]


def _binary(
    name: str,
    op: Callable[[Any, Any], Tensor],
    draw_a: Callable[..., Tensor] = randn,
    draw_b: Callable[..., Tensor] = randn,
) -> list[Case]:
    return [
        Case(f"{name}{sa}{sb}", op, (draw_a(*sa), draw_b(*sb))) for sa, sb in BROADCAST_PAIRS
    ]


def _unary(name: str, op: Callable[[Tensor], Tensor], draw: Callable[..., Tensor] = randn) -> list[Case]:
    return [Case(f"{name}{s}", op, (draw(*s),)) for s in UNARY_SHAPES]


_MASK = np.array([[True, False, True], [False, True, True]])

CASES: dict[str, list[Case]] = {
    "add": _binary("add", lambda a, b: a + b),
    "sub": _binary("sub", lambda a, b: a - b),
    "mul": _binary("mul", lambda a, b: a * b),
    "div": _binary("div", lambda a, b: a / b, draw_b=nonzero),
    "pow": [
        *_binary("pow", lambda a, b: a**b, draw_a=positive),
        Case("pow-int-exponent-negative-base", lambda x: x**3, (randn(2, 3),)),
        Case("pow-float-exponent", lambda x: x**2.5, (positive(4),)),
        Case("rpow", lambda x: 2.0**x, (randn(3),)),
        # Small integer exponents at x = 0 (x**0 once had a NaN gradient there), and a
        # tensor exponent of 0, whose mixed second derivative d/db d/da is 1/a.
        *(Case(f"pow-exponent-{k}-at-zero", lambda x, k=k: x**k, (tg.tensor([0.0, -0.7, 1.3]),)) for k in (0, 1, 2, 3)),
        Case("pow-tensor-exponent-zero", lambda a, b: a**b, (tg.tensor(np.array([0.5, 1.3, 2.0])), tg.tensor(np.zeros(3)))),
    ],
    "maximum": _binary("maximum", tg.maximum, draw_a=distinct, draw_b=off_grid),
    "minimum": _binary("minimum", tg.minimum, draw_a=distinct, draw_b=off_grid),
    "neg": _unary("neg", lambda x: -x),
    "exp": _unary("exp", tg.exp),
    "log": _unary("log", tg.log, positive),
    "sqrt": _unary("sqrt", tg.sqrt, positive),
    "abs": _unary("abs", tg.abs, nonzero),
    "relu": _unary("relu", tg.nn.relu, nonzero),
    "tanh": _unary("tanh", tg.tanh),
    "sigmoid": _unary("sigmoid", tg.sigmoid),
    "sin": _unary("sin", tg.sin),
    "cos": _unary("cos", tg.cos),
    "clip": [
        Case("clip-both", lambda x: tg.clip(x, -0.5, 0.5) * x, (tg.tensor([-1.2, -0.3, 0.1, 0.4, 0.9]),)),
        Case("clip-min", lambda x: tg.clip(x, min=0.0) ** 2, (tg.tensor([[-1.0, 0.7], [1.5, -0.2]]),)),
        Case("clip-max", lambda x: x.clip(max=1.0) * x, (tg.tensor(0.3),)),
    ],
    "where": [
        Case("where-same-shape", lambda c, x, y: tg.where(c, x * x, y), (tg.tensor(_MASK), randn(2, 3), randn(2, 3))),
        Case("where-broadcast", lambda c, x, y: tg.where(c, x, y * y), (tg.tensor(_MASK), randn(3), randn())),
        Case("where-scalar-branch", lambda x: tg.where(x > 0, x**2, 0.0), (nonzero(2, 3),)),
    ],
    "cast": [
        Case("cast-to-float32", lambda x: tg.cast(x, np.float32) * 3.0, (randn(2, 3),), eps=1e-2, tol=1e-4),
        Case(
            "cast-there-and-back",
            lambda x: x.astype(np.float32).astype(np.float64) * x,
            (randn(3),),
            eps=1e-2,
            tol=1e-4,
        ),
    ],
    "copy": [Case("copy", lambda x: tg.copy(x) * x, (randn(2, 3),))],
    "reshape": [
        Case("reshape", lambda x: tg.reshape(x, (3, 2)) ** 2, (randn(2, 3),)),
        Case("reshape-minus-one", lambda x: x.reshape(-1, 2) * x.reshape(3, 2), (randn(6),)),
        Case("reshape-0d", lambda x: x.reshape(1, 1) * x, (randn(),)),
    ],
    "transpose": [
        Case("T", lambda x: x.T * x.T, (randn(2, 3, 4),)),
        Case("transpose-axes", lambda x: tg.transpose(x, (1, 2, 0)) ** 2, (randn(2, 3, 4),)),
    ],
    "broadcast_to": [
        Case("broadcast-1d", lambda x: tg.broadcast_to(x, (2, 3)) ** 2, (randn(3),)),
        Case("broadcast-0d", lambda x: tg.broadcast_to(x, (2, 2)) ** 2, (randn(),)),
        Case("broadcast-ones", lambda x: tg.broadcast_to(x, (4, 2, 3)) ** 2, (randn(2, 1),)),
    ],
    "concatenate": [
        Case("concatenate-axis0", lambda a, b: tg.concatenate([a, b]) ** 2, (randn(2, 3), randn(1, 3))),
        Case("concatenate-axis-1", lambda a, b: tg.concatenate((a, b * b), axis=-1), (randn(2, 1), randn(2, 3))),
        Case("concatenate-reused", lambda a: tg.concatenate([a, a * a, a]), (randn(3),)),
    ],
    "stack": [
        Case("stack-axis0", lambda a, b: tg.stack([a, b * a]), (randn(3), randn(3))),
        Case("stack-axis-1", lambda a, b: tg.stack([a * a, b], axis=-1), (randn(2, 3), randn(2, 3))),
        Case("stack-0d", lambda a, b: tg.stack([a, b, a * b]), (randn(), randn())),
    ],
    "getitem": [
        Case("slices", lambda x: x[1:, ::2] ** 2, (randn(3, 4),)),
        Case("int", lambda x: x[1] * x[-1], (randn(3, 2),)),
        Case("int-array-repeats", lambda x: x[np.array([0, 2, 0, 0])] ** 2, (randn(3, 2),)),
        Case("tensor-index-repeats", lambda x: x[:, tg.tensor([1, 1, 0])] ** 2, (randn(2, 3),)),
        Case("bool-mask", lambda x: x[_MASK] ** 2, (randn(2, 3),)),
        Case("bool-tensor-mask", lambda x: x[x > 0] ** 2, (nonzero(2, 3),)),
        Case("none-ellipsis", lambda x: x[None, ..., 1] ** 2, (randn(2, 3),)),
        Case("two-int-arrays", lambda x: x[[0, 1, 1], [2, 0, 2]] ** 2, (randn(2, 3),)),
        Case("list-then-slice", lambda x: x[[1, 1, 0], 1:] ** 2, (randn(2, 3),)),
    ],
    "scatter_add": [
        Case("scatter-repeats", lambda v: scatter_add(v * v, np.array([2, 0, 2]), (4,)), (randn(3),)),
        Case("scatter-basic", lambda v: scatter_add(v * v, (slice(1, 3),), (4, 2), advanced=False), (randn(2, 2),)),
    ],
    "sum": [
        Case("sum-all", lambda x: (x * x).sum(), (randn(2, 3),)),
        Case("sum-axis", lambda x: (x * x).sum(axis=0), (randn(2, 3),)),
        Case("sum-axes-keepdims", lambda x: tg.sum(x * x, (0, 2), keepdims=True), (randn(2, 3, 4),)),
        Case("sum-negative-axis", lambda x: tg.sum(x**3, -1), (randn(2, 3),)),
        Case("sum-0d", lambda x: tg.sum(x * x), (randn(),)),
    ],
    "max": [
        Case("max-all", lambda x: x.max() * x, (distinct(2, 3),)),
        Case("max-axis", lambda x: (x * x).max(axis=1), (distinct(2, 3),)),
        Case("max-axes-keepdims", lambda x: tg.max(x, (0, 2), keepdims=True) ** 2, (distinct(2, 3, 4),)),
    ],
    "min": [
        Case("min-all", lambda x: x.min() * x, (distinct(2, 3),)),
        Case("min-axis-keepdims", lambda x: tg.min(x, -1, keepdims=True) * x, (distinct(3, 4),)),
    ],
    "affine": [
        Case("matrix-bias", lambda x, w, b: tg.affine(x, w, b), (randn(3, 4), randn(4, 5), randn(5))),
        Case("batched-bias", lambda x, w, b: tg.affine(x, w, b), (randn(2, 3, 4), randn(4, 5), randn(5))),
        Case("vector-no-bias", lambda x, w: tg.affine(x, w), (randn(4), randn(4, 5))),
    ],
    "matmul": [
        Case("matrix", lambda a, b: a @ b, (randn(3, 4), randn(4, 5))),
        Case("batched", lambda a, b: a @ b, (randn(2, 3, 4), randn(2, 4, 5))),
        Case("batch-broadcast", lambda a, b: tg.matmul(a, b), (randn(2, 1, 3, 4), randn(5, 4, 2))),
        Case("batch-times-matrix", lambda a, b: a @ b, (randn(2, 3, 4), randn(4, 5))),
        Case("vector-matrix", lambda a, b: a @ b, (randn(4), randn(4, 5))),
        Case("matrix-vector", lambda a, b: a @ b, (randn(3, 4), randn(4))),
        Case("vector-vector", lambda a, b: a @ b, (randn(4), randn(4))),
        Case("vector-batch", lambda a, b: a @ b, (randn(4), randn(2, 4, 5))),
        Case("batch-vector", lambda a, b: a @ b, (randn(2, 3, 4), randn(4))),
        Case("squared", lambda a: (a @ a) @ a, (randn(3, 3),)),
    ],
}

# Ops built from primitives, with no rule of their own.
COMPOSITIONS: list[Case] = [
    Case("logsumexp-all", tg.logsumexp, (randn(2, 3),)),
    Case("logsumexp-axis", lambda x: tg.logsumexp(x, axis=1), (randn(2, 3),)),
    Case("logsumexp-keepdims", lambda x: tg.logsumexp(x, axis=0, keepdims=True), (randn(2, 3),)),
    Case("logsumexp-large", lambda x: tg.logsumexp(x * 100.0, axis=-1), (randn(2, 3),)),
    Case("softmax", tg.softmax, (randn(2, 4),)),
    Case("softmax-axis0", lambda x: tg.softmax(x, axis=0), (randn(3, 2),)),
    Case("log_softmax", tg.log_softmax, (randn(2, 4),)),
    Case("mean-all", lambda x: (x * x).mean(), (randn(2, 3),)),
    Case("mean-axis-keepdims", lambda x: tg.mean(x**3, 1, keepdims=True), (randn(2, 3),)),
    Case("squeeze", lambda x: tg.squeeze(x * x), (randn(1, 3, 1),)),
    Case("squeeze-axis", lambda x: (x * x).squeeze(0), (randn(1, 3, 1),)),
    Case("expand_dims", lambda x: tg.expand_dims(x * x, (0, 2)), (randn(2, 3),)),
    Case("permute", lambda x: tg.permute(x * x, (2, 0, 1)), (randn(2, 3, 4),)),
    Case("swapaxes", lambda x: tg.swapaxes(x, 0, 2) ** 2, (randn(2, 3, 4),)),
    Case("max-axis-keepdims", lambda x: tg.max(x**2, 0, keepdims=True), (distinct(3, 4),)),
    Case("min-axis", lambda x: tg.min(x, 1) * x[:, 0], (distinct(3, 4),)),
    Case("index-mixed", lambda x: x[1:, np.array([0, 0, 2])][:, ::2] ** 2, (randn(3, 4),)),
    # off_grid: a value of exactly 0.5 would sit on the mask's edge, where differences mean nothing.
    Case("index-mask-then-sum", lambda x: (x[x > 0.5] ** 3).sum(), (off_grid(3, 4),)),
    Case("relu-by-where", lambda x: tg.where(x > 0, x, 0.0) ** 2, (nonzero(2, 3),)),
    Case("relu-squared", lambda x: tg.nn.relu(x) ** 2, (nonzero(2, 3),)),
    Case("concatenate-stack", lambda a, b: tg.stack([tg.concatenate([a, b]), tg.concatenate([b, a])]) ** 2, (randn(2), randn(3))),
    Case("mlp", lambda x, w, b: tg.tanh(x @ w + b).sum(axis=1), (randn(4, 3), randn(3, 2), randn(2))),
    Case("cross-entropy", lambda z: -tg.log_softmax(z)[np.arange(3), np.array([0, 2, 1])].mean(), (randn(3, 4),)),
]


def test_every_primitive_has_a_gradient_check() -> None:
    missing = sorted(set(tg.PRIMITIVES) - set(CASES))
    stale = sorted(set(CASES) - set(tg.PRIMITIVES))
    assert missing == [], f"primitives without a case in CASES: {missing}"
    assert stale == [], f"cases for names that are not primitives: {stale}"
    assert all(CASES.values()), "every primitive needs at least one case"


def _flat(cases: dict[str, list[Case]]) -> list[Any]:
    return [pytest.param(case, id=f"{name}:{case.id}") for name, group in cases.items() for case in group]


@pytest.mark.parametrize("case", _flat(CASES))
def test_primitive_gradients_to_second_order(case: Case) -> None:
    check_grads(case.fn, case.args, order=2, eps=case.eps, rtol=case.tol, atol=case.tol)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in COMPOSITIONS])
def test_composition_gradients_to_second_order(case: Case) -> None:
    check_grads(case.fn, case.args, order=2, eps=case.eps, rtol=case.tol, atol=case.tol)


def test_each_case_records_its_primitive() -> None:
    """A case only checks a primitive's rule if running it records that primitive."""
    from tapegrad._core._tape import Tape

    for name, group in CASES.items():
        for case in group:
            args = [a.astype(np.float64) if isinstance(a, Tensor) and a.dtype.kind == "f" else a for a in case.args]
            with Tape() as tape:
                case.fn(*args)
            recorded = {record[0].name for record in tape._records}
            assert name in recorded, f"case {case.id} does not record `{name}`"


def test_check_grads_catches_a_wrong_rule() -> None:
    @tg.custom_vjp
    def double(x: Tensor) -> Tensor:
        return x * 2.0

    double.defvjp(lambda x: (double(x), None), lambda _, g: (g * 3.0,))
    with pytest.raises(AssertionError, match="order-1 derivative mismatch"):
        check_grads(double, [randn(3)], order=1)


def test_max_splits_ties_evenly() -> None:
    x = tg.tensor([1.0, 3.0, 3.0])
    with tg.Tape() as tape:
        y = x.max()
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 0.5, 0.5])


def test_max_along_an_axis_splits_ties_per_row() -> None:
    x = tg.tensor([[2.0, 2.0, 1.0], [0.0, 3.0, 1.0]])
    with tg.Tape() as tape:
        y = x.max(axis=1).sum()
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])


def test_min_splits_three_way_ties() -> None:
    x = tg.tensor([0.0, 0.0, 0.0, 1.0])
    with tg.Tape() as tape:
        y = x.min() * 3.0
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), [1.0, 1.0, 1.0, 0.0])


def test_maximum_splits_ties_between_its_operands() -> None:
    a = tg.tensor([1.0, 2.0, 5.0])
    b = tg.tensor([1.0, 3.0, 4.0])
    with tg.Tape() as tape:
        y = tg.maximum(a, b).sum()
    ga, gb = tape.gradient(y, (a, b))
    np.testing.assert_array_equal(ga.numpy(), [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(gb.numpy(), [0.5, 1.0, 0.0])
