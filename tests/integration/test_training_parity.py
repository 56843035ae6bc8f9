"""Three ways to train the seed's MLP give the same numbers.

Twenty Adam steps of the 784 -> 128 -> 64 -> 10 ReLU network, from the same
initial weights on the same float64 batches: tapegrad's functional API, its
PyTorch-style wrapper, and PyTorch itself (`torch.nn` and `torch.optim.Adam`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import tapegrad as tg
from tapegrad import nn, optim, torchlike
from tapegrad.nn import LinearParams

SIZES = (784, 128, 64, 10)
STEPS = 20
BATCH = 32
LR = 1e-3

Array = np.ndarray[Any, Any]
Weights = list[tuple[Array, Array]]


def initial_weights() -> Weights:
    """Kaiming-normal weights (in, out) and small non-zero biases, from a fixed seed."""
    rng = np.random.default_rng(2024)
    return [
        (rng.standard_normal((n_in, n_out)) * np.sqrt(2.0 / n_in), rng.standard_normal(n_out) * 0.01)
        for n_in, n_out in zip(SIZES[:-1], SIZES[1:])
    ]


def batches() -> list[tuple[Array, Array]]:
    """`STEPS` batches of pixel-like float64 inputs in [0, 1) and random labels."""
    rng = np.random.default_rng(7)
    return [(rng.random((BATCH, SIZES[0])), rng.integers(0, 10, BATCH)) for _ in range(STEPS)]


# ---- the three trainers ----------------------------------------------------------------------


def train_functional(weights: Weights, data: list[tuple[Array, Array]]) -> tuple[list[float], Weights]:
    model = nn.MLP(SIZES, dtype="float64")
    fresh = model.init(tg.random.key(0))
    params = tuple(
        LinearParams(tg.tensor(weights[i // 2][0]), tg.tensor(weights[i // 2][1])) if p is not None else None
        for i, p in enumerate(fresh)
    )
    assert tg.tree.structure(params) == tg.tree.structure(fresh)
    opt = optim.adam(LR)
    state = opt.init(params)
    losses = []
    for x, y in data:
        with tg.Tape() as tape:
            loss = nn.cross_entropy(model.apply(params, tg.tensor(x)), tg.tensor(y))
        grads = tape.gradient(loss, params)
        params, state = opt.update(grads, state, params)
        losses.append(loss.item())
    return losses, [(p.weight.numpy(), bias_of(p).numpy()) for p in params if p is not None]


def bias_of(p: LinearParams) -> tg.Tensor:
    """A layer's bias, which every layer here has."""
    assert p.bias is not None
    return p.bias


class SeedMLP(torchlike.Module):
    """The seed's model, as the article writes it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torchlike.Linear(784, 128)
        self.relu1 = torchlike.ReLU()
        self.fc2 = torchlike.Linear(128, 64)
        self.relu2 = torchlike.ReLU()
        self.fc3 = torchlike.Linear(64, 10)

    def forward(self, x: torchlike.Tensor) -> torchlike.Tensor:
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        out: torchlike.Tensor = self.fc3(x)
        return out

    def layers(self) -> list[torchlike.Linear]:
        return [self.fc1, self.fc2, self.fc3]


def torchlike_model(weights: Weights) -> SeedMLP:
    model = SeedMLP()
    for layer, (w, b) in zip(model.layers(), weights):
        assert layer.bias is not None
        layer.weight.data = w.copy()
        layer.bias.data = b.copy()
    return model


def train_torchlike(weights: Weights, data: list[tuple[Array, Array]]) -> tuple[list[float], Weights]:
    model = torchlike_model(weights)
    opt = torchlike.Adam(model.parameters(), lr=LR)
    criterion = torchlike.CrossEntropyLoss()
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = criterion(model(torchlike.Tensor(x)), torchlike.Tensor(y))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out = []
    for layer in model.layers():
        assert layer.bias is not None
        out.append((layer.weight.numpy(), layer.bias.numpy()))
    return losses, out


def train_torch(weights: Weights, data: list[tuple[Array, Array]]) -> tuple[list[float], Weights]:
    linears = [torch.nn.Linear(784, 128), torch.nn.Linear(128, 64), torch.nn.Linear(64, 10)]
    model = torch.nn.Sequential(linears[0], torch.nn.ReLU(), linears[1], torch.nn.ReLU(), linears[2]).double()
    with torch.no_grad():
        for layer, (w, b) in zip(linears, weights):
            layer.weight.copy_(torch.tensor(w.T))  # torch stores (out, in)
            layer.bias.copy_(torch.tensor(b))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    losses = []
    for x, y in data:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(x)), torch.tensor(y))
        torch.autograd.backward(loss)
        opt.step()
        losses.append(loss.item())
    return losses, [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in linears]


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple[list[float], Weights]]:
    weights, data = initial_weights(), batches()
    return {
        "functional": train_functional(weights, data),
        "torchlike": train_torchlike(weights, data),
        "torch": train_torch(weights, data),
    }


@pytest.mark.parametrize("name", ["torchlike", "torch"])
def test_losses_agree_every_step(runs: dict[str, tuple[list[float], Weights]], name: str) -> None:
    reference, _ = runs["functional"]
    losses, _ = runs[name]
    assert len(losses) == len(reference) == STEPS
    np.testing.assert_allclose(losses, reference, rtol=0, atol=1e-6)
    # The loss went down: the 20 steps did train (the same batch's loss is not compared).
    assert np.mean(reference[-5:]) < np.mean(reference[:5])


@pytest.mark.parametrize("name", ["torchlike", "torch"])
def test_final_parameters_agree(runs: dict[str, tuple[list[float], Weights]], name: str) -> None:
    _, reference = runs["functional"]
    _, final = runs[name]
    start = initial_weights()
    for (w, b), (w_ref, b_ref), (w0, _) in zip(final, reference, start):
        assert w.shape == w_ref.shape and b.shape == b_ref.shape
        np.testing.assert_allclose(w, w_ref, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(b, b_ref, rtol=1e-6, atol=1e-12)
        assert not np.array_equal(w, w0)  # the weights moved


def test_functional_and_torchlike_agree_exactly(runs: dict[str, tuple[list[float], Weights]]) -> None:
    # Same engine underneath: every loss and every final weight is bitwise equal.
    assert runs["torchlike"][0] == runs["functional"][0]
    for (w, b), (w_ref, b_ref) in zip(runs["torchlike"][1], runs["functional"][1]):
        assert w.tobytes() == w_ref.tobytes() and b.tobytes() == b_ref.tobytes()


def test_one_torchlike_cycle_equals_one_functional_step_bitwise() -> None:
    weights = initial_weights()
    x, y = batches()[0]

    model = torchlike_model(weights)
    opt = torchlike.Adam(model.parameters(), lr=LR)
    opt.zero_grad()
    loss = torchlike.CrossEntropyLoss()(model(torchlike.Tensor(x)), torchlike.Tensor(y))
    loss.backward()
    opt.step()

    functional = nn.MLP(SIZES, dtype="float64")
    params = (
        LinearParams(tg.tensor(weights[0][0]), tg.tensor(weights[0][1])), None,
        LinearParams(tg.tensor(weights[1][0]), tg.tensor(weights[1][1])), None,
        LinearParams(tg.tensor(weights[2][0]), tg.tensor(weights[2][1])),
    )
    fopt = optim.adam(LR)
    with tg.Tape() as tape:
        floss = nn.cross_entropy(functional.apply(params, tg.tensor(x)), tg.tensor(y))
    new_params, _ = fopt.update(tape.gradient(floss, params), fopt.init(params), params)

    assert loss.item() == floss.item()
    expected = [leaf.numpy() for leaf in tg.tree.leaves(new_params)]
    got = [p.numpy() for p in model.parameters()]
    assert len(got) == len(expected) == 6
    for g, e in zip(got, expected):
        assert g.tobytes() == e.tobytes()
    # ... and the step did change every parameter.
    for g, initial in zip(got, [a for pair in weights for a in pair]):
        assert not np.array_equal(g, initial)
