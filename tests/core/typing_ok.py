"""Code that must pass `mypy --strict`: `Tape.gradient` returns the type of its sources.

So `grads.weight` type-checks as a `Tensor` for a frozen attrs class of
parameters, and a `dict[str, Tensor]` comes back as one. `test_typing.py`
runs mypy on this file (the project's mypy run checks it too) and runs it.
"""

from __future__ import annotations

import attrs

import tapegrad as tg
from tapegrad import Tape, Tensor


@attrs.frozen
class Linear:
    weight: Tensor
    bias: Tensor


def attrs_step(params: Linear, x: Tensor, lr: float) -> Linear:
    with Tape() as tape:
        loss = ((x @ params.weight + params.bias) ** 2).mean()
    grads = tape.gradient(loss, params)
    weight_grad: Tensor = grads.weight
    bias_grad: Tensor = grads.bias
    return Linear(params.weight - lr * weight_grad, params.bias - lr * bias_grad)


def dict_step(params: dict[str, Tensor], x: Tensor, lr: float) -> dict[str, Tensor]:
    with Tape() as tape:
        loss = tg.tanh(x @ params["w"]).sum()
    grads: dict[str, Tensor] = tape.gradient(loss, params)
    return {name: params[name] - lr * grads[name] for name in params}


def tuple_grads(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    with Tape() as tape:
        y = (a * b).sum()
    grads: tuple[Tensor, Tensor] = tape.gradient(y, (a, b))
    return grads


def single_grad(x: Tensor) -> Tensor:
    with Tape() as tape:
        y = tg.sum(x * x)
    return tape.gradient(y, x)


def run() -> list[float]:
    """Run every function once; the values are checked by `test_typing.py`."""
    x = tg.tensor([[1.0, 2.0]])
    linear = attrs_step(Linear(tg.tensor([[1.0], [1.0]]), tg.tensor([0.0])), x, 0.1)
    params = dict_step({"w": tg.tensor([[0.0], [0.0]])}, x, 1.0)
    ga, gb = tuple_grads(tg.tensor(2.0), tg.tensor(3.0))
    return [
        linear.bias.item(),
        params["w"].sum().item(),
        ga.item(),
        gb.item(),
        single_grad(tg.tensor(4.0)).item(),
    ]
