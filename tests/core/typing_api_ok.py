"""Typed use of both APIs that ``mypy --strict`` must accept (it is checked, never run by pytest).

The functional side: `Tape.gradient` returns the type it was given, so
``grads[0].weight`` is a `Tensor` to mypy, and the optimizer hands back the
parameters' own type. The wrapper side: a `Module` subclass and the classic loop.
"""

from __future__ import annotations

from typing import assert_type

import numpy as np

import tapegrad as tg
from tapegrad import nn, optim, torchlike
from tapegrad.nn import LinearParams

# ---- functional -----------------------------------------------------------------------------

Params = tuple[LinearParams, None, LinearParams]


def init_params(key: tg.random.Key) -> Params:
    k1, k2 = tg.random.split(key)
    return (nn.Linear(4, 8).init(k1), None, nn.Linear(8, 3).init(k2))


def forward(params: Params, x: tg.Tensor) -> tg.Tensor:
    first, _, second = params
    h = nn.relu(nn.Linear(4, 8).apply(first, x))
    return nn.Linear(8, 3).apply(second, h)


def train_step(
    params: Params, state: object, opt: optim.Optimizer, x: tg.Tensor, y: tg.Tensor
) -> tuple[Params, object, float]:
    with tg.Tape() as tape:
        loss = nn.cross_entropy(forward(params, x), y)
    grads = tape.gradient(loss, params)
    # assert_type fails under mypy if the type were Any: gradients keep the params' type.
    assert_type(grads, Params)
    weight_grad = assert_type(grads[0].weight, tg.Tensor)
    bias_grad = assert_type(grads[2].bias, tg.Tensor | None)
    assert weight_grad.shape == params[0].weight.shape
    assert bias_grad is None or bias_grad.dtype == np.float32
    new_params, new_state = opt.update(grads, state, params)
    assert_type(new_params, Params)
    return new_params, new_state, loss.item()


def functional_loop() -> float:
    opt = optim.adam(1e-2)
    params = init_params(tg.random.key(0))
    state = opt.init(params)
    x = tg.tensor(np.ones((2, 4), dtype=np.float32))
    y = tg.tensor(np.array([0, 2]))
    loss = 0.0
    for _ in range(3):
        params, state, loss = train_step(params, state, opt, x, y)
    # A replayed function keeps its signature: the results are typed as the function's.
    def pure_step(params: Params, state: object, x: tg.Tensor, y: tg.Tensor) -> tuple[Params, object, tg.Tensor]:
        with tg.Tape() as tape:
            loss = nn.cross_entropy(forward(params, x), y)
        new_params, new_state = opt.update(tape.gradient(loss, params), state, params)
        return new_params, new_state, loss

    replayed = tg.replay(pure_step)
    for _ in range(3):
        params, state, replayed_loss = replayed(params, state, x, y)
        assert_type(params, Params)
        assert_type(replayed_loss, tg.Tensor)
    sequential = nn.Sequential(nn.Linear(4, 3), nn.GELU())
    out = assert_type(sequential.apply(sequential.init(tg.random.key(1)), x), tg.Tensor)
    return loss + float(out.sum().item())


# ---- torchlike ----------------------------------------------------------------------------------


class TinyNet(torchlike.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torchlike.Linear(4, 8)
        self.act = torchlike.ReLU()
        self.fc2 = torchlike.Linear(8, 3)

    def forward(self, x: torchlike.Tensor) -> torchlike.Tensor:
        return self.fc2.forward(self.act.forward(self.fc1.forward(x)))


def torchlike_loop() -> list[float]:
    model = TinyNet()
    optimizer = torchlike.Adam(model.parameters(), lr=1e-2)
    criterion = torchlike.CrossEntropyLoss()
    images = torchlike.Tensor(np.ones((2, 4)))
    labels = torchlike.Tensor(np.array([0, 2]))
    losses: list[float] = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = criterion.forward(model.forward(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    with torchlike.no_grad():
        preds = np.argmax(model.forward(images).numpy(), axis=1)
    model.eval()
    grad = assert_type(model.fc1.weight.grad, torchlike.Tensor | None)
    if grad is not None:
        losses.append(float(grad.numpy().sum()))
    return losses + [float(p) for p in preds]
