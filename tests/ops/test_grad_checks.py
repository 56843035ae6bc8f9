"""Every primitive's rule, and its rule's rule, against central finite differences.

`check_grads(order=2)` compares the tape's first and second directional
derivatives with float64 finite differences. Each primitive's cases are the
``grad`` of its row in the op table (`table.py`); `test_table.py` fails when a
registered primitive has no row. Inputs stay away from kinks (``abs`` at 0, ties
in ``max``, ``clip``'s bounds), where a finite difference means nothing.
Compositions (ops with no rule of their own) and pinned tie-breaking follow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tensor
from tapegrad.testing import check_grads

from ._inputs import GradCase, distinct, nonzero, off_grid, randn
from .table import ROWS

# Ops built from primitives, with no rule of their own.
COMPOSITIONS: list[GradCase] = [
    GradCase("logsumexp-all", tg.logsumexp, (randn(2, 3),)),
    GradCase("logsumexp-axis", lambda x: tg.logsumexp(x, axis=1), (randn(2, 3),)),
    GradCase("logsumexp-keepdims", lambda x: tg.logsumexp(x, axis=0, keepdims=True), (randn(2, 3),)),
    GradCase("logsumexp-large", lambda x: tg.logsumexp(x * 100.0, axis=-1), (randn(2, 3),)),
    GradCase("softmax", tg.softmax, (randn(2, 4),)),
    GradCase("softmax-axis0", lambda x: tg.softmax(x, axis=0), (randn(3, 2),)),
    GradCase("log_softmax", tg.log_softmax, (randn(2, 4),)),
    GradCase("mean-all", lambda x: (x * x).mean(), (randn(2, 3),)),
    GradCase("mean-axis-keepdims", lambda x: tg.mean(x**3, 1, keepdims=True), (randn(2, 3),)),
    GradCase("squeeze", lambda x: tg.squeeze(x * x), (randn(1, 3, 1),)),
    GradCase("squeeze-axis", lambda x: (x * x).squeeze(0), (randn(1, 3, 1),)),
    GradCase("expand_dims", lambda x: tg.expand_dims(x * x, (0, 2)), (randn(2, 3),)),
    GradCase("permute", lambda x: tg.permute(x * x, (2, 0, 1)), (randn(2, 3, 4),)),
    GradCase("swapaxes", lambda x: tg.swapaxes(x, 0, 2) ** 2, (randn(2, 3, 4),)),
    GradCase("max-axis-keepdims", lambda x: tg.max(x**2, 0, keepdims=True), (distinct(3, 4),)),
    GradCase("min-axis", lambda x: tg.min(x, 1) * x[:, 0], (distinct(3, 4),)),
    GradCase("index-mixed", lambda x: x[1:, np.array([0, 0, 2])][:, ::2] ** 2, (randn(3, 4),)),
    # off_grid: a value of exactly 0.5 would sit on the mask's edge, where differences mean nothing.
    GradCase("index-mask-then-sum", lambda x: (x[x > 0.5] ** 3).sum(), (off_grid(3, 4),)),
    GradCase("relu-by-where", lambda x: tg.where(x > 0, x, 0.0) ** 2, (nonzero(2, 3),)),
    GradCase("relu-squared", lambda x: tg.nn.relu(x) ** 2, (nonzero(2, 3),)),
    GradCase("concatenate-stack", lambda a, b: tg.stack([tg.concatenate([a, b]), tg.concatenate([b, a])]) ** 2, (randn(2), randn(3))),
    GradCase("mlp", lambda x, w, b: tg.tanh(x @ w + b).sum(axis=1), (randn(4, 3), randn(3, 2), randn(2))),
    GradCase("cross-entropy", lambda z: -tg.log_softmax(z)[np.arange(3), np.array([0, 2, 1])].mean(), (randn(3, 4),)),
]


def _table_cases() -> list[Any]:
    return [pytest.param(case, id=f"{row.name}:{case.id}") for row in ROWS for case in row.grad]


@pytest.mark.parametrize("case", _table_cases())
def test_primitive_gradients_to_second_order(case: GradCase) -> None:
    check_grads(case.fn, case.args, order=2, eps=case.eps, rtol=case.tol, atol=case.tol)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in COMPOSITIONS])
def test_composition_gradients_to_second_order(case: GradCase) -> None:
    check_grads(case.fn, case.args, order=2, eps=case.eps, rtol=case.tol, atol=case.tol)


def test_each_case_records_its_primitive() -> None:
    """A case only checks a primitive's rule if running it records that primitive."""
    from tapegrad._core._tape import Tape

    for row in ROWS:
        for case in row.grad:
            args = [a.astype(np.float64) if isinstance(a, Tensor) and a.dtype.kind == "f" else a for a in case.args]
            with Tape() as tape:
                case.fn(*args)
            recorded = {record[0].name for record in tape._records}
            assert row.name in recorded, f"case {case.id} does not record `{row.name}`"


@pytest.mark.xfail(
    strict=True,
    raises=RuntimeWarning,
    reason="pow's rule computes b * a**(b - 1), and a**-1 overflows at a subnormal a: 0 * inf",
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gradient_of_x_to_the_0_at_a_subnormal_x_is_0(dtype: type[np.floating[Any]]) -> None:
    """A known failure: a NaN gradient (with an overflow warning) where 0 is right."""
    x = tg.tensor(np.array([np.finfo(dtype).smallest_subnormal, 1.0], dtype=dtype))
    with tg.Tape() as tape:
        y = (x**0).sum()
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0.0, 0.0])


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
