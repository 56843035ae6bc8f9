"""Values and gradients of every op against PyTorch, on inputs drawn by Hypothesis.

PyTorch is the independent oracle. For each row of the op table (`table.py`), both
libraries run the op in float64 on the same arrays, drawn by the row's sampler,
and the gradients of the output against a random cotangent must agree; where the
row says our subgradient at a kink or tie is PyTorch's, the draws land there too.
`EXPRESSIONS` adds what the rows do not write: compositions with no rule of their
own, and primitives used twice in one expression, where the gradients must add
up. A last test compares a Hessian-vector product of a small MLP's loss with
PyTorch's double backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tapegrad as tg
from tapegrad import Tensor

from ._inputs import Array, Domain, Draws
from .table import OPS, Tolerances

TgFn = Callable[..., Tensor]
TorchFn = Callable[..., torch.Tensor]


def _compare(data: st.DataObject, tg_fn: TgFn, torch_fn: TorchFn, arrays: Sequence[Array], tol: Tolerances) -> None:
    """Values, then gradients against one drawn cotangent; only floating arrays are differentiated."""
    xs = [tg.tensor(a) for a in arrays]
    with tg.Tape() as tape:
        out = tg_fn(*xs)
    ts = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    expected = torch_fn(*ts)
    want = expected.detach().numpy()

    assert out.dtype == want.dtype
    assert out.shape == tuple(expected.shape)
    rtol, atol = tol.torch_value
    np.testing.assert_allclose(out.numpy(), want, rtol=rtol, atol=atol)

    width: Literal[32, 64] = 32 if out.dtype == np.float32 else 64
    values = st.floats(-2.0, 2.0, width=width, allow_subnormal=False)
    cotangent = data.draw(hnp.arrays(out.dtype, out.shape, elements=values))
    sources = [x for x, a in zip(xs, arrays) if a.dtype.kind == "f"]
    grads = tape.gradient(out, sources, output_gradients=tg.tensor(cotangent))
    torch_grads = torch.autograd.grad(
        expected, [t for t in ts if t.requires_grad], torch.from_numpy(cotangent), allow_unused=True
    )
    rtol, atol = tol.torch_grad
    for g, tgrad, x in zip(grads, torch_grads, sources):
        expected_grad = np.zeros(x.shape) if tgrad is None else tgrad.numpy()
        assert g.shape == x.shape and g.dtype == x.dtype
        np.testing.assert_allclose(g.numpy(), expected_grad, rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", sorted(OPS))
@given(data=st.data())
def test_values_and_gradients_match_torch(name: str, data: st.DataObject) -> None:
    row = OPS[name]
    sample = row.sample(Draws(data.draw, at_kinks=row.torch_at_kinks), np.float64)
    _compare(
        data,
        lambda *xs: row.tg_fn(*xs, *sample.params),
        lambda *ts: row.torch_fn(*ts, *sample.params),
        sample.arrays,
        row.tol,
    )


# ---- expressions beyond one primitive ----------------------------------------------------
@attrs.frozen
class Parity:
    """One drawn example: the same expression in both libraries, and its inputs."""

    tg_fn: TgFn
    torch_fn: TorchFn
    args: Sequence[Array]


def _array(d: Draws, shape: tuple[int, ...], domain: Domain = Domain.REAL) -> Array:
    return d.array(shape, np.float64, domain)


def _shape(d: Draws, min_dims: int = 0) -> tuple[int, ...]:
    return d.shape(min_dims=min_dims, min_side=1)


def unary(tg_fn: TgFn, torch_fn: TorchFn) -> Callable[[Draws], Parity]:
    def draw(d: Draws) -> Parity:
        return Parity(tg_fn, torch_fn, [_array(d, _shape(d))])

    return draw


def _integer_power(d: Draws) -> Parity:
    """``x**k`` for a small integer ``k``, on a base with zeros (x**0 once had a NaN gradient at 0)."""
    k = d(st.sampled_from([-2, -1, 0, 1, 2, 3]))
    real = st.floats(-3.0, 3.0, allow_subnormal=False)
    values = st.floats(0.25, 3.0, allow_subnormal=False) if k < 0 else st.just(0.0) | real
    x = np.asarray(d(hnp.arrays(np.float64, _shape(d), elements=values)), dtype=np.float64)
    return Parity(lambda t: t**k, lambda t: t**k, [x])


def _axis(d: Draws, ndim: int) -> int | None:
    return d(st.none() | st.integers(-ndim, ndim - 1)) if ndim else None


def _torch_axis(axis: int | None) -> Any:
    return () if axis is None else axis


def _mean(d: Draws) -> Parity:
    x = _array(d, _shape(d))
    axis = _axis(d, x.ndim)
    return Parity(lambda t: t.mean(axis), lambda t: t.mean(_torch_axis(axis)), [x])


def _softmax_family(tg_fn: TgFn, torch_fn: TorchFn) -> Callable[[Draws], Parity]:
    def draw(d: Draws) -> Parity:
        x = _array(d, _shape(d, min_dims=1))
        axis = d(st.integers(-x.ndim, x.ndim - 1))
        return Parity(lambda t: tg_fn(t, axis), lambda t: torch_fn(t, axis), [x])

    return draw


def _logsumexp(d: Draws) -> Parity:
    x = _array(d, _shape(d, min_dims=1))
    axis = d(st.integers(-x.ndim, x.ndim - 1))
    keepdims = d(st.booleans())
    return Parity(lambda t: tg.logsumexp(t, axis, keepdims), lambda t: torch.logsumexp(t, axis, keepdims), [x])


def _cast_round_trip(d: Draws) -> Parity:
    x = _array(d, _shape(d))
    return Parity(
        lambda t: t.astype(np.float32).astype(np.float64) * t,
        lambda t: t.to(torch.float32).to(torch.float64) * t,
        [x],
    )


def _joined(tg_join: Callable[..., Tensor], torch_join: Callable[..., torch.Tensor], same: bool) -> Callable[[Draws], Parity]:
    """One input joined twice with another's square: each input's gradient adds up its pieces."""

    def draw(d: Draws) -> Parity:
        shape = _shape(d, min_dims=1)
        axis = d(st.integers(-len(shape), len(shape) - 1))
        other = list(shape)
        if not same:
            other[axis] = d(st.integers(1, 3))
        return Parity(
            lambda a, b: tg_join([a, b * b, a], axis=axis),
            lambda a, b: torch_join([a, b * b, a], axis),
            [_array(d, shape), _array(d, tuple(other))],
        )

    return draw


def _mask(d: Draws) -> Parity:
    x = _array(d, _shape(d, min_dims=1))
    return Parity(lambda t: t[t > 0.5] ** 2, lambda t: t[t > 0.5] ** 2, [x])


def _softplus(t: Any) -> Any:
    return (t.exp() + 1.0).log()


EXPRESSIONS: dict[str, Callable[[Draws], Parity]] = {
    "pow-scalar": unary(lambda t: t**3 + 2.0**t, lambda t: t**3 + 2.0**t),
    "pow-integer-at-zero": _integer_power,
    "softplus": unary(_softplus, torch.nn.functional.softplus),
    "cast-round-trip": _cast_round_trip,
    "copy-times-input": unary(lambda t: tg.copy(t) * t, lambda t: t.clone() * t),
    "concatenate-reused": _joined(tg.concatenate, torch.cat, same=False),
    "stack-reused": _joined(tg.stack, torch.stack, same=True),
    "getitem-mask": _mask,
    "mean": _mean,
    "logsumexp": _logsumexp,
    "softmax": _softmax_family(tg.softmax, torch.softmax),
    "log_softmax": _softmax_family(tg.log_softmax, torch.log_softmax),
}


@pytest.mark.parametrize("name", sorted(EXPRESSIONS))
@given(data=st.data())
def test_expressions_match_torch(name: str, data: st.DataObject) -> None:
    case = EXPRESSIONS[name](Draws(data.draw))
    _compare(data, case.tg_fn, case.torch_fn, case.args, Tolerances())


# ---- a Hessian-vector product through a small MLP ------------------------------------

_rng = np.random.default_rng(7)
_X = _rng.standard_normal((6, 4))
_LABELS = np.array([0, 2, 1, 1, 0, 2])
_PARAMS = {
    "w1": _rng.standard_normal((4, 5)) * 0.5,
    "b1": _rng.standard_normal(5) * 0.1,
    "w2": _rng.standard_normal((5, 3)) * 0.5,
    "b2": _rng.standard_normal(3) * 0.1,
}
_VECTOR = {k: _rng.standard_normal(v.shape) for k, v in _PARAMS.items()}


def _tg_loss(p: dict[str, Tensor], x: Tensor) -> Tensor:
    h = tg.tanh(x @ p["w1"] + p["b1"])
    h = _softplus(h)
    logits = h @ p["w2"] + p["b2"]
    return -tg.log_softmax(logits)[np.arange(len(_LABELS)), _LABELS].mean()


def _torch_loss(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = torch.nn.functional.softplus(torch.tanh(x @ p["w1"] + p["b1"]))
    logits = h @ p["w2"] + p["b2"]
    return torch.nn.functional.cross_entropy(logits, torch.from_numpy(_LABELS))


def test_mlp_hessian_vector_product_matches_torch_double_backward() -> None:
    params = {k: tg.tensor(v) for k, v in _PARAMS.items()}
    vector = {k: tg.tensor(v) for k, v in _VECTOR.items()}
    x = tg.tensor(_X)
    with tg.Tape() as outer:
        with tg.Tape() as inner:
            loss = _tg_loss(params, x)
        grads = inner.gradient(loss, params)
        grad_dot_v = tg.sum(tg.stack([(grads[k] * vector[k]).sum() for k in sorted(params)]))
    hvp = outer.gradient(grad_dot_v, params)

    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in _PARAMS.items()}
    tloss = _torch_loss(tparams, torch.from_numpy(_X))
    keys = sorted(tparams)
    tgrads = torch.autograd.grad(tloss, [tparams[k] for k in keys], create_graph=True)
    tdot = torch.stack([(g * torch.from_numpy(_VECTOR[k])).sum() for g, k in zip(tgrads, keys)]).sum()
    thvp = torch.autograd.grad(tdot, [tparams[k] for k in keys])

    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-12)
    for k, tg_grad, th in zip(keys, tgrads, thvp):
        np.testing.assert_allclose(grads[k].numpy(), tg_grad.detach().numpy(), rtol=1e-9, atol=1e-12)
        assert np.abs(th.numpy()).max() > 1e-3, "the check needs nonzero second derivatives"
        np.testing.assert_allclose(hvp[k].numpy(), th.numpy(), rtol=1e-8, atol=1e-12, err_msg=k)
