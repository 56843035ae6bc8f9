"""Values and gradients of every op against PyTorch, on inputs drawn by Hypothesis.

PyTorch is the independent oracle: for each op, both libraries run the same
expression in float64 on the same arrays, and the gradients of the output
against a random cotangent must agree. A last test compares a Hessian-vector
product of a small MLP's loss with PyTorch's double backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import attrs
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import tapegrad as tg
from tapegrad import Tensor
from tapegrad._core._shape import scatter_add

TgFn = Callable[..., Tensor]
TorchFn = Callable[..., torch.Tensor]
Shape = tuple[int, ...]
T = TypeVar("T")


class Draw(Protocol):
    """`data.draw`: a strategy in, one of its values out."""

    def __call__(self, strategy: st.SearchStrategy[T], /) -> T: ...



@attrs.frozen
class Parity:
    """One drawn example: the same function in both libraries, and its inputs."""

    tg_fn: TgFn
    torch_fn: TorchFn
    args: Sequence[np.ndarray[Any, np.dtype[np.float64]]]


def _elements(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def _array(draw: Draw, shape: Shape, domain: str = "real") -> np.ndarray[Any, np.dtype[np.float64]]:
    if domain == "positive":  # log, sqrt, and the base of a tensor power
        elements = _elements(0.1, 3.0)
    elif domain == "nonzero":  # denominators
        magnitude = draw(hnp.arrays(np.float64, shape, elements=_elements(0.25, 3.0)))
        signs = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.0, 1.0])))
        return np.asarray(magnitude * signs, dtype=np.float64)
    else:
        elements = _elements(-3.0, 3.0)
    return np.asarray(draw(hnp.arrays(np.float64, shape, elements=elements)), dtype=np.float64)


def _shape(draw: Draw, min_dims: int = 0) -> Shape:
    return draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))


def _pair(draw: Draw) -> tuple[Shape, Shape]:
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, min_side=1, max_side=4))
    a, b = shapes.input_shapes
    return a, b


def _axis(draw: Draw, ndim: int) -> int | None:
    return draw(st.none() | st.integers(-ndim, ndim - 1)) if ndim else None


def _torch_axis(axis: int | None) -> Any:
    return () if axis is None else axis


def unary(tg_fn: TgFn, torch_fn: TorchFn, domain: str = "real") -> Callable[[Draw], Parity]:
    def draw(d: Draw) -> Parity:
        return Parity(tg_fn, torch_fn, [_array(d, _shape(d), domain)])

    return draw


def binary(
    tg_fn: TgFn, torch_fn: TorchFn, domain_a: str = "real", domain_b: str = "real"
) -> Callable[[Draw], Parity]:
    def draw(d: Draw) -> Parity:
        sa, sb = _pair(d)
        return Parity(tg_fn, torch_fn, [_array(d, sa, domain_a), _array(d, sb, domain_b)])

    return draw


def _integer_power(d: Draw) -> Parity:
    """``x**k`` for a small integer ``k``, on a base with zeros (x**0 once had a NaN gradient at 0)."""
    k = d(st.sampled_from([-2, -1, 0, 1, 2, 3]))
    elements = _elements(0.25, 3.0) if k < 0 else st.just(0.0) | _elements(-3.0, 3.0)
    x = np.asarray(d(hnp.arrays(np.float64, _shape(d), elements=elements)), dtype=np.float64)
    return Parity(lambda t: t**k, lambda t: t**k, [x])


def _clip(d: Draw) -> Parity:
    x = _array(d, _shape(d))
    # At a bound the two libraries pick different (equally valid) subgradients.
    assume(not np.isin(x, [-0.5, 1.0]).any())
    return Parity(lambda t: tg.clip(t, -0.5, 1.0), lambda t: t.clamp(-0.5, 1.0), [x])


def _reduction(tg_name: str, torch_fn: Callable[[torch.Tensor, Any, bool], torch.Tensor]) -> Callable[[Draw], Parity]:
    def draw(d: Draw) -> Parity:
        x = _array(d, _shape(d))
        axis = _axis(d, x.ndim)
        keepdims = d(st.booleans())
        op = getattr(tg, tg_name)
        return Parity(lambda t: op(t, axis, keepdims), lambda t: torch_fn(t, _torch_axis(axis), keepdims), [x])

    return draw


def _mean(d: Draw) -> Parity:
    x = _array(d, _shape(d))
    axis = _axis(d, x.ndim)
    return Parity(lambda t: t.mean(axis), lambda t: t.mean(_torch_axis(axis)), [x])


def _softmax_family(tg_fn: TgFn, torch_fn: TorchFn) -> Callable[[Draw], Parity]:
    def draw(d: Draw) -> Parity:
        x = _array(d, _shape(d, min_dims=1))
        axis = d(st.integers(-x.ndim, x.ndim - 1))
        return Parity(lambda t: tg_fn(t, axis), lambda t: torch_fn(t, axis), [x])

    return draw


def _logsumexp(d: Draw) -> Parity:
    x = _array(d, _shape(d, min_dims=1))
    axis = d(st.integers(-x.ndim, x.ndim - 1))
    keepdims = d(st.booleans())
    return Parity(lambda t: tg.logsumexp(t, axis, keepdims), lambda t: torch.logsumexp(t, axis, keepdims), [x])


def _where(d: Draw) -> Parity:
    sc, sx = _pair(d)
    c = _array(d, sc)
    x = _array(d, sx)
    y = _array(d, sc)
    return Parity(
        lambda ct, xt, yt: tg.where(ct > 0, xt, yt),
        lambda ct, xt, yt: torch.where(ct > 0, xt, yt),
        [c, x, y],
    )


def _cast(d: Draw) -> Parity:
    x = _array(d, _shape(d))
    return Parity(
        lambda t: t.astype(np.float32).astype(np.float64) * t,
        lambda t: t.to(torch.float32).to(torch.float64) * t,
        [x],
    )


def _reshape(d: Draw) -> Parity:
    x = _array(d, _shape(d))
    return Parity(lambda t: t.reshape(-1, 1) * 2.0, lambda t: t.reshape(-1, 1) * 2.0, [x])


def _transpose(d: Draw) -> Parity:
    x = _array(d, _shape(d))
    perm = tuple(d(st.permutations(range(x.ndim))))
    return Parity(lambda t: tg.transpose(t, perm), lambda t: t.permute(perm), [x])


def _broadcast_to(d: Draw) -> Parity:
    sa, sb = _pair(d)
    target = np.broadcast_shapes(sa, sb)
    return Parity(lambda t: tg.broadcast_to(t, target), lambda t: t.broadcast_to(target), [_array(d, sa)])


def _joined(tg_join: Callable[..., Tensor], torch_join: Callable[..., torch.Tensor], same: bool) -> Callable[[Draw], Parity]:
    def draw(d: Draw) -> Parity:
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


def _getitem(d: Draw) -> Parity:
    x = _array(d, _shape(d, min_dims=1))
    n = x.shape[0]
    index = np.array(d(st.lists(st.integers(0, n - 1), min_size=1, max_size=6)))  # repeats likely
    start = d(st.integers(0, n - 1))
    return Parity(
        lambda t: tg.concatenate([t[index], t[start:]]) * tg.tensor(2.0, dtype=np.float64),
        lambda t: torch.cat([t[torch.from_numpy(index)], t[start:]]) * 2.0,
        [x],
    )


def _mask(d: Draw) -> Parity:
    x = _array(d, _shape(d, min_dims=1))
    return Parity(lambda t: t[t > 0.5] ** 2, lambda t: t[t > 0.5] ** 2, [x])


def _scatter_add(d: Draw) -> Parity:
    size = d(st.integers(1, 5))
    index = np.array(d(st.lists(st.integers(0, size - 1), min_size=1, max_size=6)))
    values = _array(d, (len(index),))
    return Parity(
        lambda v: scatter_add(v * v, index, (size,)),
        lambda v: torch.zeros(size, dtype=torch.float64).index_add(0, torch.from_numpy(index), v * v),
        [values],
    )


def _matmul(d: Draw) -> Parity:
    m, k, n = (d(st.integers(1, 4)) for _ in range(3))
    batch = d(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    a_shape = d(st.sampled_from([(k,), (m, k), (*batch, m, k)]))
    b_shape = d(st.sampled_from([(k,), (k, n), (*batch, k, n)]))
    return Parity(lambda a, b: a @ b, lambda a, b: a @ b, [_array(d, a_shape), _array(d, b_shape)])


def _softplus(t: Any) -> Any:
    return (t.exp() + 1.0).log()


def _affine(d: Draw) -> Parity:
    m, k, n = (d(st.integers(1, 4)) for _ in range(3))
    batch = d(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    x_shape = d(st.sampled_from([(k,), (m, k), (*batch, m, k)]))
    return Parity(
        tg.affine,
        lambda x, w, b: torch.nn.functional.linear(x, w.T, b),
        [_array(d, x_shape), _array(d, (k, n)), _array(d, (n,))],
    )


OPS: dict[str, Callable[[Draw], Parity]] = {
    "add": binary(lambda a, b: a + b, lambda a, b: a + b),
    "sub": binary(lambda a, b: a - b, lambda a, b: a - b),
    "mul": binary(lambda a, b: a * b, lambda a, b: a * b),
    "div": binary(lambda a, b: a / b, lambda a, b: a / b, domain_b="nonzero"),
    "pow": binary(lambda a, b: a**b, lambda a, b: a**b, domain_a="positive"),
    "pow-scalar": unary(lambda t: t**3 + 2.0**t, lambda t: t**3 + 2.0**t),
    "pow-integer-at-zero": _integer_power,
    "maximum": binary(tg.maximum, torch.maximum),
    "minimum": binary(tg.minimum, torch.minimum),
    "neg": unary(lambda t: -t, lambda t: -t),
    "exp": unary(tg.exp, torch.exp),
    "log": unary(tg.log, torch.log, "positive"),
    "sqrt": unary(tg.sqrt, torch.sqrt, "positive"),
    "abs": unary(tg.abs, torch.abs),
    "relu": unary(tg.nn.relu, torch.relu, "nonzero"),
    "tanh": unary(tg.tanh, torch.tanh),
    "sigmoid": unary(tg.sigmoid, torch.sigmoid),
    "sin": unary(tg.sin, torch.sin),
    "cos": unary(tg.cos, torch.cos),
    "softplus": unary(_softplus, torch.nn.functional.softplus),
    "clip": _clip,
    "where": _where,
    "cast": _cast,
    "copy": unary(lambda t: tg.copy(t) * t, lambda t: t.clone() * t),
    "reshape": _reshape,
    "transpose": _transpose,
    "broadcast_to": _broadcast_to,
    "concatenate": _joined(tg.concatenate, torch.cat, same=False),
    "stack": _joined(tg.stack, torch.stack, same=True),
    "getitem": _getitem,
    "getitem-mask": _mask,
    "scatter_add": _scatter_add,
    "sum": _reduction("sum", lambda t, axis, keep: t.sum(axis, keepdim=keep)),
    "max": _reduction("max", lambda t, axis, keep: t.amax(axis, keepdim=keep)),
    "min": _reduction("min", lambda t, axis, keep: t.amin(axis, keepdim=keep)),
    "mean": _mean,
    "logsumexp": _logsumexp,
    "softmax": _softmax_family(tg.softmax, torch.softmax),
    "log_softmax": _softmax_family(tg.log_softmax, torch.log_softmax),
    "matmul": _matmul,
    "affine": _affine,
}


def test_every_primitive_is_compared_with_torch() -> None:
    missing = sorted(set(tg.PRIMITIVES) - set(OPS))
    assert missing == [], f"primitives without a PyTorch parity case: {missing}"


@pytest.mark.parametrize("name", sorted(OPS))
@given(data=st.data())
def test_values_and_gradients_match_torch(name: str, data: st.DataObject) -> None:
    case = OPS[name](data.draw)
    xs = [tg.tensor(a) for a in case.args]
    with tg.Tape() as tape:
        out = case.tg_fn(*xs)
    ts = [torch.tensor(a, requires_grad=True) for a in case.args]
    expected = case.torch_fn(*ts)

    assert out.dtype == np.float64
    assert out.shape == tuple(expected.shape)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)

    cotangent = data.draw(hnp.arrays(np.float64, out.shape, elements=_elements(-2.0, 2.0)))
    grads = tape.gradient(out, xs, output_gradients=tg.tensor(cotangent))
    torch_grads = torch.autograd.grad(expected, ts, torch.from_numpy(cotangent), allow_unused=True)
    for g, tgrad, x in zip(grads, torch_grads, xs):
        want = np.zeros(x.shape) if tgrad is None else tgrad.numpy()
        assert g.shape == x.shape and g.dtype == x.dtype
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-9, atol=1e-12)


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
