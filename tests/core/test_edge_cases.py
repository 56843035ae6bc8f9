"""Numerical edge cases, each pinned with literal values.

Warnings are errors in this suite, so a test that does not expect one also
proves that none is raised. The policy: an op the user calls on a singular
value (``log(0)``, ``1/0``, ``exp`` overflowing) warns as NumPy does, in its
forward pass and in its rule; the library's stable compositions (softmax,
log_softmax, logsumexp, cross_entropy) never warn, also on infinite inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tape, Tensor

from _support import line_after

INF = np.inf
NAN = np.nan
W = tg.tensor([1.0, 2.0, 3.0])  # a cotangent that tells the entries apart


def value_and_grad(
    fn: Callable[[Tensor], Tensor], x: Tensor, weights: Tensor | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``fn(x)``, and the gradient of its sum (weighted by ``weights`` if given)."""
    with Tape() as tape:
        y = fn(x)
        total = y.sum() if weights is None else (y * weights).sum()
    return y.numpy(), tape.gradient(total, x).numpy()


# ---- log and sqrt at 0: NumPy's values, and NumPy's warnings ----------------------------
def test_log_at_zero_is_minus_inf_with_an_infinite_gradient_and_warns_like_numpy() -> None:
    x = tg.tensor([0.0, 2.0])
    with pytest.warns(RuntimeWarning, match="divide by zero encountered in log"):
        with Tape() as tape:
            y = tg.log(x).sum()
    assert y.item() == -INF
    with pytest.warns(RuntimeWarning, match="divide by zero encountered in divide"):
        g = tape.gradient(y, x)
    np.testing.assert_array_equal(g.numpy(), [INF, 0.5])
    assert g.dtype == np.float32


def test_sqrt_at_zero_is_zero_with_an_infinite_gradient() -> None:
    x = tg.tensor([0.0, 4.0])
    with Tape() as tape:
        y = tg.sqrt(x).sum()  # no warning: sqrt(0) is exact
    assert y.item() == 2.0
    with pytest.warns(RuntimeWarning, match="divide by zero encountered in divide"):
        g = tape.gradient(y, x)
    np.testing.assert_array_equal(g.numpy(), [INF, 0.25])


# ---- where: exact zeros for the branch not taken, and where NaN still gets in -------------
def test_where_gives_the_branch_not_taken_an_exact_zero() -> None:
    x = tg.tensor([-1.0, 2.0])
    y = tg.tensor([5.0, 7.0])
    with Tape() as tape:
        out = tg.where(x > 0, x * 3.0, y * -2.0)
    gx, gy = tape.gradient(out, (x, y), output_gradients=tg.tensor([1.0, 1.0]))
    np.testing.assert_array_equal(gx.numpy(), [0.0, 3.0])
    np.testing.assert_array_equal(gy.numpy(), [-2.0, 0.0])


def test_where_leaks_nan_through_the_untaken_branchs_own_rule() -> None:
    # Documented in `where`: the zero cotangent meets log's rule g / x, which
    # is 0/0 at x = 0 (and only -0.0 at x = -1), as in JAX and PyTorch.
    x = tg.tensor([-1.0, 0.0, 2.0])
    with np.errstate(divide="ignore", invalid="ignore"):
        _, g = value_and_grad(lambda t: tg.where(t > 0, tg.log(t), 0.0), x)
        _, g_sqrt = value_and_grad(lambda t: tg.where(t > 0, tg.sqrt(t), 0.0), x)
    np.testing.assert_array_equal(g, [-0.0, NAN, 0.5])
    np.testing.assert_allclose(g_sqrt, [NAN, NAN, 0.5**1.5 / 1.0], rtol=1e-6)


def test_the_safe_where_pattern_gives_exact_zeros_and_no_warning() -> None:
    x = tg.tensor([-1.0, 0.0, 2.0])
    y, g = value_and_grad(lambda t: tg.where(t > 0, tg.log(tg.where(t > 0, t, 1.0)), 0.0), x)
    np.testing.assert_allclose(y, [0.0, 0.0, np.log(2.0)], rtol=1e-6)
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.5])
    assert not np.signbit(g[:2]).any()


# ---- softmax, log_softmax, logsumexp at +-1e4 ---------------------------------------------
def test_softmax_family_at_plus_minus_1e4_is_finite() -> None:
    x = tg.tensor([1e4, 0.0, -1e4])
    p, gp = value_and_grad(tg.softmax, x, W)
    lp, glp = value_and_grad(tg.log_softmax, x, W)
    lse, glse = value_and_grad(tg.logsumexp, x)
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(gp, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(lp, [0.0, -1e4, -2e4])
    np.testing.assert_array_equal(glp, [-5.0, 2.0, 3.0])  # w - p * sum(w)
    assert lse == 1e4
    np.testing.assert_array_equal(glse, [1.0, 0.0, 0.0])


def test_logsumexp_of_two_large_equal_entries() -> None:
    lse, g = value_and_grad(tg.logsumexp, tg.tensor([1e4, 1e4]))
    assert lse == np.float32(10000.693359375)  # 1e4 + log(2), rounded to float32
    np.testing.assert_array_equal(g, [0.5, 0.5])


# ---- ... and with infinite logits: limits, zero gradients, no warnings ---------------------
def test_a_plus_inf_entry_takes_all_the_probability() -> None:
    x = tg.tensor([INF, 0.0, 1.0])
    p, gp = value_and_grad(tg.softmax, x, W)
    lp, glp = value_and_grad(tg.log_softmax, x, W)
    lse, glse = value_and_grad(tg.logsumexp, x)
    np.testing.assert_array_equal(p, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(lp, [0.0, -INF, -INF])
    assert lse == INF
    # The slice is saturated: nudging any entry changes nothing.
    for g in (gp, glp, glse):
        np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


def test_plus_inf_entries_share_the_probability_evenly() -> None:
    x = tg.tensor([[INF, INF, 0.0], [1.0, 2.0, 3.0]])
    p = tg.softmax(x, axis=1).numpy()
    np.testing.assert_array_equal(p[0], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(p[1], [0.09003057, 0.24472848, 0.66524094], rtol=1e-6)
    np.testing.assert_allclose(tg.log_softmax(x, axis=1).numpy()[0], [-np.log(2.0), -np.log(2.0), -INF])
    np.testing.assert_allclose(tg.logsumexp(x, axis=1).numpy(), [INF, 3.40760596], rtol=1e-6)


def test_a_minus_inf_entry_gets_probability_zero_and_the_usual_gradient() -> None:
    x = tg.tensor([-INF, 0.0, 1.0])
    p, gp = value_and_grad(tg.softmax, x, W)
    lp, glp = value_and_grad(tg.log_softmax, x, W)
    lse, glse = value_and_grad(tg.logsumexp, x)
    np.testing.assert_allclose(p, [0.0, 0.26894142, 0.73105858], rtol=1e-6)
    np.testing.assert_allclose(gp, [0.0, -0.19661193, 0.19661193], rtol=1e-5)
    np.testing.assert_allclose(lp, [-INF, -1.31326169, -0.31326169], rtol=1e-6)
    np.testing.assert_allclose(glp, [1.0, 0.38635147, -1.38635147], rtol=1e-5)
    np.testing.assert_allclose(lse, 1.31326169, rtol=1e-6)
    np.testing.assert_allclose(glse, [0.0, 0.26894142, 0.73105858], rtol=1e-6)


def test_an_all_minus_inf_slice_has_no_distribution() -> None:
    x = tg.tensor([[-INF, -INF], [0.0, 0.0]])
    p, gp = value_and_grad(lambda t: tg.softmax(t, axis=1), x)
    lp, glp = value_and_grad(lambda t: tg.log_softmax(t, axis=1), x)
    lse, glse = value_and_grad(lambda t: tg.logsumexp(t, axis=1), x)
    np.testing.assert_array_equal(p, [[NAN, NAN], [0.5, 0.5]])
    np.testing.assert_allclose(lp, [[NAN, NAN], [-np.log(2.0)] * 2])
    np.testing.assert_allclose(lse, [-INF, np.log(2.0)])
    np.testing.assert_array_equal(gp, [[0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(glp, [[0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(glse, [[0.0, 0.0], [0.5, 0.5]])


# ---- cross_entropy -----------------------------------------------------------------------
def _cross_entropy(logits: list[list[float]], labels: list[int]) -> tuple[float, np.ndarray]:
    z = tg.tensor(logits)
    with Tape() as tape:
        loss = tg.nn.cross_entropy(z, tg.tensor(labels))
    return loss.item(), tape.gradient(loss, z).numpy()


def test_cross_entropy_at_plus_minus_1e4() -> None:
    loss, g = _cross_entropy([[1e4, -1e4], [-1e4, 1e4]], [0, 0])
    assert loss == 1e4  # (0 + 2e4) / 2
    np.testing.assert_array_equal(g, [[0.0, 0.0], [-0.5, 0.5]])


def test_cross_entropy_with_a_plus_inf_logit() -> None:
    loss, g = _cross_entropy([[INF, 0.0, 1.0]], [0])
    assert loss == 0.0
    np.testing.assert_array_equal(g, [[0.0, 0.0, 0.0]])
    loss, g = _cross_entropy([[INF, 0.0, 1.0]], [1])
    assert loss == INF
    np.testing.assert_array_equal(g, [[1.0, -1.0, 0.0]])  # softmax - one_hot, both finite
    loss, g = _cross_entropy([[INF, INF, 0.0]], [0])
    np.testing.assert_allclose(loss, np.log(2.0))
    np.testing.assert_array_equal(g, [[-0.5, 0.5, 0.0]])


def test_cross_entropy_with_a_minus_inf_logit() -> None:
    loss, g = _cross_entropy([[-INF, 0.0, 1.0]], [1])
    np.testing.assert_allclose(loss, 1.31326169, rtol=1e-6)
    np.testing.assert_allclose(g, [[0.0, -0.73105858, 0.73105858]], rtol=1e-6)
    loss, g = _cross_entropy([[-INF, 0.0, 1.0]], [0])
    assert loss == INF
    np.testing.assert_allclose(g, [[-1.0, 0.26894142, 0.73105858]], rtol=1e-6)


def test_cross_entropy_of_an_all_minus_inf_row_is_nan_without_warnings() -> None:
    loss, g = _cross_entropy([[-INF, -INF], [0.0, 0.0]], [0, 1])
    assert np.isnan(loss)
    np.testing.assert_array_equal(g, [[NAN, NAN], [0.25, -0.25]])


def test_cross_entropy_under_an_outer_tape_with_a_plus_inf_logit() -> None:
    # Under an outer tape the rule recomputes softmax with tapegrad ops.
    z = tg.tensor([[INF, 0.0, 1.0]])
    with Tape() as outer:
        with Tape() as inner:
            loss = tg.nn.cross_entropy(z, tg.tensor([1]))
        g = inner.gradient(loss, z)
        s = (g * g).sum()
    np.testing.assert_array_equal(g.numpy(), [[1.0, -1.0, 0.0]])
    np.testing.assert_array_equal(outer.gradient(s, z).numpy(), [[0.0, 0.0, 0.0]])


# ---- max and min: ties and NaN --------------------------------------------------------------
def test_max_splits_tied_gradients_evenly() -> None:
    y, g = value_and_grad(lambda t: t.max(), tg.tensor([3.0, 1.0, 3.0, 3.0]))
    assert y == 3.0
    np.testing.assert_allclose(g, [1 / 3, 0.0, 1 / 3, 1 / 3])


def test_max_propagates_nan_and_gives_the_nan_entries_the_gradient() -> None:
    x = tg.tensor([[1.0, NAN, 3.0], [NAN, 2.0, NAN], [1.0, 2.0, 2.0]])
    y, g = value_and_grad(lambda t: t.max(axis=1), x)
    np.testing.assert_array_equal(y, [NAN, NAN, 2.0])  # NumPy's max propagates NaN
    np.testing.assert_array_equal(g, [[0.0, 1.0, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
    y, g = value_and_grad(lambda t: t.min(), tg.tensor([1.0, NAN]))
    assert np.isnan(y)
    np.testing.assert_array_equal(g, [0.0, 1.0])


def test_maximum_with_nan_sends_the_gradient_to_the_nan_side() -> None:
    a = tg.tensor([NAN, 2.0])
    b = tg.tensor([1.0, 1.0])
    with Tape() as tape:
        y = tg.maximum(a, b).sum()
    assert np.isnan(y.item())
    ga, gb = tape.gradient(y, (a, b))
    np.testing.assert_array_equal(ga.numpy(), [0.0, 1.0])
    np.testing.assert_array_equal(gb.numpy(), [1.0, 0.0])


def test_reductions_of_a_0d_tensor_take_axis_0_or_minus_1() -> None:
    x = tg.tensor(2.5)
    for axis in (0, -1):
        y, g = value_and_grad(lambda t: tg.max(t, axis) * tg.sum(t, axis), x)
        assert y == 6.25 and g == 5.0
    with pytest.raises(ValueError, match=re.escape("`sum`: axis 1 is out of range for a tensor with 0 dimensions")):
        tg.sum(x, 1)


# ---- division by zero and overflow: NumPy's values and warnings -------------------------------
def test_division_by_zero_gives_numpys_inf_and_nan() -> None:
    a = tg.tensor([1.0, 0.0, -1.0])
    b = tg.tensor([0.0, 0.0, 0.0])
    with pytest.warns(RuntimeWarning):
        with Tape() as tape:
            y = a / b
    np.testing.assert_array_equal(y.numpy(), [INF, NAN, -INF])
    with pytest.warns(RuntimeWarning):
        ga, gb = tape.gradient(y, (a, b), output_gradients=tg.tensor([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(ga.numpy(), [INF, INF, INF])  # g / b
    np.testing.assert_array_equal(gb.numpy(), [-INF, NAN, INF])  # -(g * out) / b


def test_exp_overflows_float32_to_inf_but_not_float64() -> None:
    x32 = tg.tensor([89.0, 0.0])
    with pytest.warns(RuntimeWarning, match="overflow encountered in exp"):
        y, g = value_and_grad(tg.exp, x32)
    np.testing.assert_array_equal(y, [INF, 1.0])
    np.testing.assert_array_equal(g, [INF, 1.0])
    y64 = tg.exp(tg.tensor([89.0], dtype=np.float64)).item()
    np.testing.assert_allclose(y64, 4.4896128191743455e38)


# ---- debug_nans: the first op, forward or backward, and the user's line -------------------------
def test_debug_nans_reports_exp_overflowing_float32() -> None:
    x = tg.tensor([1.0, 100.0])
    with tg.debug_nans():
        line = line_after()
        with pytest.raises(FloatingPointError) as info:
            tg.exp(x)
    where = f"{__file__}:{line + 1}: tg.exp(x)"
    assert str(info.value) == f"`exp` produced inf in its forward pass, called at {where}"


def test_debug_nans_reports_a_nan_that_first_appears_in_a_backward_rule() -> None:
    # Forward: sqrt(0) = 0 and where picks 0, all finite. Backward: the zero
    # cotangent of the untaken branch meets sqrt's rule, 0 / (2 * 0) = nan.
    x = tg.tensor([0.0, 4.0])
    with tg.debug_nans():
        with Tape() as tape:
            line = line_after()
            root = tg.sqrt(x)
            y = tg.where(x > 0, root, 0.0).sum()
        with pytest.raises(FloatingPointError) as info:
            tape.gradient(y, x)
    where = f"{__file__}:{line}: root = tg.sqrt(x)"
    assert str(info.value) == f"`sqrt` produced nan in its backward pass (cotangent of input 0), called at {where}"


def test_debug_nans_is_silent_for_stable_compositions_on_finite_extremes() -> None:
    x = tg.tensor([[1e4, -1e4, 0.0]])
    with tg.debug_nans():
        with Tape() as tape:
            loss = tg.nn.cross_entropy(x, tg.tensor([1])) + tg.log_softmax(x).sum() * 0.0
        g = tape.gradient(loss, x)
    np.testing.assert_array_equal(g.numpy(), [[1.0, -1.0, 0.0]])
