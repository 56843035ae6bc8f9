"""Differentiating through an optimizer's update, against PyTorch.

A MAML-style outer gradient differentiates the loss after a few inner
optimizer steps with respect to the starting parameters: it flows through each
update, through the gradients the update read (second order) and through a
Tensor learning rate. Under a recording tape every transform computes with
tapegrad ops; PyTorch, with ``create_graph=True`` and the updates written out
in torch ops, is the oracle. Without a tape the raw path runs, and under one
the recorded path must give the same values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import tapegrad as tg
from tapegrad import Tensor, optim
from tapegrad.testing import check_grads

Array = np.ndarray[Any, Any]
TorchParams = dict[str, torch.Tensor]
#: One inner step in torch: (params, grads, state, step number from 1) -> (params, state).
TorchStep = Callable[[TorchParams, TorchParams, Any, int], tuple[TorchParams, Any]]

SHAPES = {"w1": (3, 6), "b1": (6,), "w2": (6, 1), "b2": (1,)}
INNER_STEPS = 2


def start(seed: int = 0) -> dict[str, Array]:
    """An MLP's starting parameters, in float64."""
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(shape) * 0.7 for k, shape in SHAPES.items()}


def tasks(seed: int = 1) -> tuple[Array, Array, Array, Array]:
    """A support set (inner steps) and a query set (outer loss) of a regression task."""
    rng = np.random.default_rng(seed)
    xs, xq = rng.standard_normal((8, 3)), rng.standard_normal((8, 3))
    return xs, np.sin(xs.sum(1, keepdims=True)), xq, np.sin(xq.sum(1, keepdims=True))


def tg_loss(p: dict[str, Tensor], x: Array, y: Array) -> Tensor:
    h = tg.tanh(tg.tensor(x) @ p["w1"] + p["b1"])
    return ((h @ p["w2"] + p["b2"] - tg.tensor(y)) ** 2).mean()


def torch_loss(p: TorchParams, x: Array, y: Array) -> torch.Tensor:
    h = torch.tanh(torch.from_numpy(x) @ p["w1"] + p["b1"])
    return ((h @ p["w2"] + p["b2"] - torch.from_numpy(y)) ** 2).mean()


def tg_maml(opt: optim.Optimizer, params: dict[str, Tensor], extra: Any = None) -> tuple[float, Any]:
    """The query loss after `INNER_STEPS` updates on the support set, and its gradient
    with respect to the starting parameters (and ``extra``, e.g. a Tensor learning rate)."""
    xs, ys, xq, yq = tasks()
    with tg.Tape() as outer:
        p, state = params, opt.init(params)
        for _ in range(INNER_STEPS):
            with tg.Tape() as inner:
                loss = tg_loss(p, xs, ys)
            p, state = opt.update(inner.gradient(loss, p), state, p)
        meta = tg_loss(p, xq, yq)
    return float(meta), outer.gradient(meta, (params, extra))


def torch_maml(step: TorchStep, state: Any, extra: torch.Tensor | None = None) -> tuple[float, Any]:
    """`tg_maml` in PyTorch: ``torch.autograd.grad(create_graph=True)`` in the inner loop."""
    xs, ys, xq, yq = tasks()
    params = {k: torch.tensor(v, requires_grad=True) for k, v in start().items()}
    p = params
    for t in range(1, INNER_STEPS + 1):
        grads = torch.autograd.grad(torch_loss(p, xs, ys), list(p.values()), create_graph=True)
        p, state = step(p, dict(zip(p, grads)), state, t)
    meta = torch_loss(p, xq, yq)
    sources = [*params.values(), *([extra] if extra is not None else [])]
    grads = torch.autograd.grad(meta, sources)
    return float(meta.detach()), grads


def torch_sgd(lr: Any, momentum: Any = 0.0, nesterov: bool = False) -> TorchStep:
    """SGD as `torch.optim.SGD` computes it, in differentiable torch ops."""

    def step(p: TorchParams, g: TorchParams, buf: Any, t: int) -> tuple[TorchParams, Any]:
        if momentum:
            buf = {k: momentum * buf[k] + g[k] if buf else g[k] for k in p}
            g = {k: g[k] + momentum * buf[k] for k in p} if nesterov else buf
        return {k: p[k] - lr * g[k] for k in p}, buf

    return step


def torch_adam(lr: Any, b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8) -> TorchStep:
    """Adam as `torch.optim.Adam` computes it, in differentiable torch ops."""

    def step(p: TorchParams, g: TorchParams, mv: Any, t: int) -> tuple[TorchParams, Any]:
        m0, v0 = mv or ({k: torch.zeros_like(p[k]) for k in p}, {k: torch.zeros_like(p[k]) for k in p})
        m = {k: b1 * m0[k] + (1 - b1) * g[k] for k in p}
        v = {k: b2 * v0[k] + (1 - b2) * g[k] ** 2 for k in p}
        new = {
            k: p[k] - lr * (m[k] / (1 - b1**t)) / (torch.sqrt(v[k] / (1 - b2**t)) + eps) for k in p
        }
        return new, (m, v)

    return step


def tg_params() -> dict[str, Tensor]:
    return {k: tg.tensor(v) for k, v in start().items()}


def assert_close_grads(ours: dict[str, Tensor], theirs: Any, tol: float = 1e-10) -> None:
    """``theirs`` lists torch's gradients in the order of `SHAPES`."""
    assert len(ours) == len(SHAPES)
    for k, ref in zip(SHAPES, theirs, strict=True):
        np.testing.assert_allclose(ours[k].numpy(), ref.numpy(), rtol=tol, atol=tol, err_msg=k)


CASES: dict[str, tuple[Callable[[], optim.Optimizer], Callable[[], TorchStep]]] = {
    "sgd": (lambda: optim.sgd(0.3), lambda: torch_sgd(0.3)),
    "momentum": (lambda: optim.sgd(0.2, momentum=0.9), lambda: torch_sgd(0.2, 0.9)),
    "nesterov": (
        lambda: optim.sgd(0.2, momentum=0.9, nesterov=True),
        lambda: torch_sgd(0.2, 0.9, nesterov=True),
    ),
    "adam": (lambda: optim.adam(0.05), lambda: torch_adam(0.05)),
    "adam_b": (lambda: optim.adam(0.05, b1=0.5, b2=0.9, eps=1e-3), lambda: torch_adam(0.05, 0.5, 0.9, 1e-3)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_maml_outer_gradient_matches_torch(name: str) -> None:
    """Two inner steps of each optimizer, then the query loss: value and outer gradient
    agree with PyTorch's double backward to 1e-10 in float64 (first-order was off by ~2)."""
    make, make_torch = CASES[name]
    meta, (grads, _) = tg_maml(make(), tg_params())
    ref_meta, ref_grads = torch_maml(make_torch(), None)
    assert meta == pytest.approx(ref_meta, rel=1e-12)
    assert_close_grads(grads, ref_grads)


Make = Callable[[Any], optim.Optimizer]
MakeTorch = Callable[[Any], TorchStep]
#: A hyperparameter given as a Tensor: the optimizer and its torch step, of it, and its value.
HYPER_CASES: dict[str, tuple[Make, MakeTorch, float]] = {
    "sgd_lr": (lambda h: optim.sgd(h), lambda h: torch_sgd(h), 0.1),
    "adam_lr": (lambda h: optim.adam(h), lambda h: torch_adam(h), 0.1),
    "momentum": (lambda h: optim.sgd(0.2, h), lambda h: torch_sgd(0.2, h), 0.9),
    "nesterov": (lambda h: optim.sgd(0.2, h, True), lambda h: torch_sgd(0.2, h, True), 0.9),
    "adam_b1": (lambda h: optim.adam(0.05, b1=h), lambda h: torch_adam(0.05, b1=h), 0.8),
    "adam_b2": (lambda h: optim.adam(0.05, b2=h), lambda h: torch_adam(0.05, b2=h), 0.9),
    "adam_eps": (lambda h: optim.adam(0.05, eps=h), lambda h: torch_adam(0.05, eps=h), 1e-2),
}


@pytest.mark.parametrize("name", list(HYPER_CASES))
def test_maml_gradient_of_a_tensor_hyperparameter_matches_torch(name: str) -> None:
    """A hyperparameter given as a 0-d Tensor gets its meta-gradient (as Meta-SGD learns lr)."""
    make, make_torch, value = HYPER_CASES[name]
    h = tg.tensor(value, dtype=np.float64)
    torch_h = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    _, (grads, h_grad) = tg_maml(make(h), tg_params(), h)
    _, ref = torch_maml(make_torch(torch_h), None, torch_h)
    assert_close_grads(grads, ref[:-1])
    assert float(ref[-1]) != 0.0
    np.testing.assert_allclose(h_grad.numpy(), ref[-1].numpy(), rtol=1e-10, atol=1e-12)


def test_a_schedule_returning_a_tensor_is_differentiated() -> None:
    """A schedule written in tapegrad ops of a Tensor rate passes the rate's gradient on."""
    base = tg.tensor(0.2, dtype=np.float64)
    torch_base = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    opt = optim.sgd(lambda count: base * 0.5)
    _, (grads, base_grad) = tg_maml(opt, tg_params(), base)
    _, ref = torch_maml(torch_sgd(torch_base * 0.5), None, torch_base)
    assert_close_grads(grads, ref[:-1])
    np.testing.assert_allclose(base_grad.numpy(), ref[-1].numpy(), rtol=1e-10, atol=1e-12)


RECORDED_VS_RAW = {
    "sgd": lambda: optim.sgd(0.3),
    "momentum": lambda: optim.sgd(0.2, momentum=0.9),
    "nesterov": lambda: optim.sgd(0.2, momentum=0.9, nesterov=True),
    "adam": lambda: optim.adam(0.05),
    "schedule": lambda: optim.adam(optim.warmup_cosine_decay_schedule(0.0, 0.1, 1, 10)),
    "tensor_lr": lambda: optim.sgd(tg.tensor(0.25, dtype=np.float64)),
    "tensor_momentum": lambda: optim.sgd(0.2, tg.tensor(0.9, dtype=np.float64), nesterov=True),
    "tensor_adam": lambda: optim.adam(
        tg.tensor(0.05, dtype=np.float64), *(tg.tensor(x, dtype=np.float64) for x in (0.8, 0.9, 1e-3))
    ),
}


@pytest.mark.parametrize("name", list(RECORDED_VS_RAW))
def test_the_recorded_path_gives_the_raw_paths_values(name: str) -> None:
    """Three steps under a tape and without one: parameters and state agree to 1e-12."""
    opt = RECORDED_VS_RAW[name]()
    rng = np.random.default_rng(5)
    params = tg_params()
    runs = []
    for record in (False, True):
        p, state = params, opt.init(params)
        for _ in range(3):
            grads = {k: tg.tensor(rng.standard_normal(v.shape)) for k, v in params.items()}
            if record:
                with tg.Tape():
                    p, state = opt.update(grads, state, p)
            else:
                p, state = opt.update(grads, state, p)
        runs.append(tg.tree.leaves((p, state)))
        rng = np.random.default_rng(5)
    for raw, recorded in zip(*runs):
        assert raw.dtype == recorded.dtype
        np.testing.assert_allclose(recorded.numpy(), raw.numpy(), rtol=1e-12, atol=1e-12)


def test_the_recorded_path_keeps_float32_float32() -> None:
    """Constants are rounded to the updates' dtype, and float64 Tensor hyperparameters are cast."""
    params = {"w": tg.tensor([1.0, -2.0])}
    grads = {"w": tg.tensor([0.5, -0.5])}
    f64 = np.float64
    for opt in (
        optim.adam(0.1),
        optim.adam(tg.tensor(0.1, dtype=f64), tg.tensor(0.9, dtype=f64), eps=tg.tensor(1e-3, dtype=f64)),
        optim.sgd(tg.tensor(0.1, dtype=f64), momentum=tg.tensor(0.5, dtype=f64), nesterov=True),
    ):
        with tg.Tape():
            new, state = opt.update(grads, opt.init(params), params)
        assert new["w"].dtype == np.float32
        assert all(x.dtype in (np.float32, np.int64) for x in tg.tree.leaves(state))


@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam"])
def test_check_grads_through_one_update(name: str) -> None:
    """Finite differences (to second order) of a loss after one update with respect
    to the parameters and the gradients the update reads."""
    opt = {"sgd": optim.sgd(0.3), "nesterov": optim.sgd(0.2, 0.9, True), "adam": optim.adam(0.1)}[name]
    rng = np.random.default_rng(2)
    # A state one step in, so that momentum and both moments are non-zero.
    w0 = {"w": tg.tensor(rng.standard_normal(4))}
    state = opt.update({"w": tg.tensor(rng.standard_normal(4))}, opt.init(w0), w0)[1]

    def after_step(w: Tensor, g: Tensor) -> Tensor:
        new, _ = opt.update({"w": g}, state, {"w": w})
        return (tg.sin(new["w"]) * new["w"]).sum()

    check_grads(after_step, [tg.tensor(rng.standard_normal(4)), tg.tensor(rng.standard_normal(4))])


def test_adam_meta_gradient_is_finite_where_a_gradient_is_exactly_zero() -> None:
    """A coordinate whose gradient is always 0 has v = 0; the meta-gradient stays finite.

    The plain rule ``g / (2 sqrt(v))`` would give ``0 * inf = nan`` there, and the
    nan would spread to every parameter through the shared loss.
    """
    w = tg.tensor([1.0, 2.0, 3.0], dtype=np.float64)
    mask = tg.tensor([1.0, 1.0, 0.0], dtype=np.float64)  # w[2] never gets a gradient
    opt = optim.adam(0.1)
    with tg.Tape() as outer:
        p, state = {"w": w}, opt.init({"w": w})
        for _ in range(2):
            with tg.Tape() as inner:
                loss = ((p["w"] * mask) ** 2).sum()
            p, state = opt.update(inner.gradient(loss, p), state, p)
        meta = (p["w"] ** 3).sum()
    grad = outer.gradient(meta, w)
    assert np.isfinite(grad.numpy()).all()
    # w[2] moves only through the identity: d(w**3)/dw = 3 w**2.
    assert grad.numpy()[2] == 27.0


def test_tensor_hyperparameters_are_checked() -> None:
    """A Tensor hyperparameter must be 0-d and floating, and in range like a number."""
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`sgd`: a Tensor lr must be 0-d and floating, got shape (2,) and dtype float32; "
            "e.g. tg.tensor(0.1)"
        ),
    ):
        optim.sgd(tg.tensor([0.1, 0.2]))
    with pytest.raises(
        ValueError, match=re.escape("`adam`: lr must be positive, got a Tensor holding -0.5")
    ):
        optim.adam(tg.tensor(-0.5))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "`sgd`: a Tensor momentum must be 0-d and floating, got shape () and dtype int64; "
            "e.g. tg.tensor(0.1)"
        ),
    ):
        optim.sgd(0.1, tg.tensor(1))
    with pytest.raises(ValueError, match=re.escape("`adam`: b1 must be in [0, 1), got 1.5")):
        optim.adam(0.1, b1=tg.tensor(1.5))


def test_tensor_hyperparameters_leave_the_raw_path_bit_for_bit() -> None:
    """With no tape recording, Tensor hyperparameters step exactly as the equal numbers do."""
    f64 = np.float64
    pairs = [
        (optim.sgd(0.2, 0.9, True), optim.sgd(tg.tensor(0.2, dtype=f64), tg.tensor(0.9, dtype=f64), True)),
        (
            optim.adam(0.05, 0.8, 0.9, 1e-3),
            optim.adam(*(tg.tensor(x, dtype=f64) for x in (0.05, 0.8, 0.9, 1e-3))),
        ),
    ]
    rng = np.random.default_rng(3)
    params = {"w": tg.tensor(rng.standard_normal((4, 3)).astype(np.float32))}
    grads = [{"w": tg.tensor(rng.standard_normal((4, 3)).astype(np.float32))} for _ in range(3)]
    for numbers, tensors in pairs:
        a, sa = params, numbers.init(params)
        b, sb = params, tensors.init(params)
        for g in grads:
            a, sa = numbers.update(g, sa, a)
            b, sb = tensors.update(g, sb, b)
        assert a["w"].dtype == b["w"].dtype == np.float32
        np.testing.assert_array_equal(a["w"].numpy(), b["w"].numpy())
