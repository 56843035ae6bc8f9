"""`torchlike.replay`: the classic PyTorch step, traced once and replayed, equals eager."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

import tapegrad as tg
import tapegrad.torchlike as tl


def build(optimizer: str = "adam") -> tuple[tl.Sequential, tl.Optimizer]:
    """The seed's MLP with the seed's weights (``np.random.seed(42)``)."""
    np.random.seed(42)
    net = tl.Sequential(tl.Linear(784, 128), tl.ReLU(), tl.Linear(128, 64), tl.ReLU(), tl.Linear(64, 10))
    opt: tl.Optimizer
    if optimizer == "adam":
        opt = tl.Adam(net.parameters(), lr=1e-3)
    else:
        opt = tl.SGD(net.parameters(), lr=0.05, momentum=0.9)
    return net, opt


def make_step(net: tl.Module, opt: tl.Optimizer) -> Callable[[tl.Tensor, tl.Tensor], tl.Tensor]:
    criterion = tl.CrossEntropyLoss()

    def train_step(x: tl.Tensor, y: tl.Tensor) -> tl.Tensor:
        opt.zero_grad()
        loss: tl.Tensor = criterion(net(x), y)
        loss.backward()
        opt.step()
        return loss

    return train_step


def batches(n: int) -> list[tuple[tl.Tensor, tl.Tensor]]:
    rng = np.random.default_rng(3)
    return [(tl.Tensor(rng.random((16, 784))), tl.Tensor(rng.integers(0, 10, 16))) for _ in range(n)]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_replayed_torch_style_step_is_bitwise_eager(optimizer: str) -> None:
    eager_net, eager_opt = build(optimizer)
    eager = make_step(eager_net, eager_opt)
    net, opt = build(optimizer)
    step = tl.replay(make_step(net, opt), net, opt)
    for x, y in batches(12):
        assert eager(x, y).item() == step(x, y).item()
    for p, q in zip(eager_net.parameters(), net.parameters()):
        assert np.array_equal(p.data, q.data)
        assert p.grad is not None and q.grad is not None
        assert np.array_equal(p.grad.data, q.grad.data)
    replayed = step.replayed  # type: ignore[attr-defined]
    # The first call has no gradients yet, the second does: two signatures.
    assert (replayed.traces, replayed.replays) == (2, 10)


def test_a_failed_trace_leaves_the_model_as_it_was() -> None:
    net, opt = build()
    before = [p.data.copy() for p in net.parameters()]

    def bad_step(x: tl.Tensor, y: tl.Tensor) -> float:
        opt.zero_grad()
        loss = tl.CrossEntropyLoss()(net(x), y)
        loss.backward()
        opt.step()
        return float(loss.item())

    step = tl.replay(bad_step, net, opt)
    x, y = batches(1)[0]
    with pytest.raises(tg.ReplayError, match=re.escape("x.item() turns the value into a Python number")):
        step(x, y)
    for p, b in zip(net.parameters(), before):
        assert type(p.data) is np.ndarray and np.array_equal(p.data, b)
        assert p.grad is None


def test_an_argument_that_requires_grad_is_refused() -> None:
    net, opt = build()
    step = tl.replay(make_step(net, opt), net, opt)
    x, y = batches(1)[0]
    with pytest.raises(tg.ReplayError, match=re.escape(
        "torchlike.replay: an argument requires grad; a replayed step must reach its parameters "
        "through the modules and optimizers passed to replay(), not its arguments"
    )):
        step(tl.Tensor(x.data, requires_grad=True), y)


def test_a_non_module_state_holder_is_refused() -> None:
    with pytest.raises(TypeError, match=re.escape(
        "torchlike.replay: the stateful objects must be Modules or Optimizers, got dict"
    )):
        tl.replay(lambda: None, {})  # type: ignore[arg-type]


def test_an_open_graph_from_an_earlier_forward_is_dropped() -> None:
    net, opt = build()
    step = tl.replay(make_step(net, opt), net, opt)
    x, y = batches(1)[0]
    from tapegrad.torchlike import _autograd

    net(x)  # a forward pass never backpropagated leaves a graph on the ambient tape
    assert _autograd._AMBIENT.tape is not None and not tg.is_recording()
    step(x, y)
    assert _autograd._AMBIENT.tape is None
