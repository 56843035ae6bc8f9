"""The PyTorch-style wrapper: module discovery, modes, buffers, ``.grad`` semantics and memory.

Behaviour follows PyTorch where the seed's loop relies on it: gradients
accumulate until ``zero_grad()``, ``no_grad()`` records nothing, and an
evaluation forward pass that is never backpropagated does not keep its
activations alive past the next ``zero_grad()``.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

import tapegrad as tg
from tapegrad import nn
from tapegrad.torchlike import (
    GELU,
    SGD,
    Adam,
    CrossEntropyLoss,
    Linear,
    Module,
    MSELoss,
    ReLU,
    Sequential,
    Tensor,
    no_grad,
    xp,
)
from tapegrad.torchlike import replay as tl_replay

NO_GRAD_MESSAGE = (
    "backward(): this tensor does not require grad; it was not computed from any "
    "tensor with requires_grad=True since the last backward() or zero_grad()"
)
FREED_MESSAGE = (
    "backward(): the graph behind this tensor was already freed, by an earlier backward() "
    "through it (or by torchlike.replay); compute it again, or pass retain_graph=True to the "
    "first backward(), as in PyTorch"
)


@pytest.fixture(autouse=True)
def _fresh_ambient_tape() -> Iterator[None]:
    """Every test starts and ends with no ambient tape, whatever the previous one left."""
    from tapegrad.torchlike import _autograd

    _autograd.release()
    yield
    _autograd.release()


def tape_open() -> bool:
    """Whether the thread's ambient tape holds a graph (it is entered only while a wrapper op runs)."""
    from tapegrad.torchlike import _autograd

    assert not tg.is_recording()  # between wrapper ops, functional code is never recorded
    return _autograd._AMBIENT.tape is not None


@pytest.fixture
def seeded() -> Iterator[None]:
    """Seed the global RNG the wrapper's `Linear` draws from, and restore it afterwards."""
    state = np.random.get_state()
    xp.random.seed(0)
    yield
    np.random.set_state(state)


class Net(Module):
    """Children in every place `parameters()` looks: attributes, a list, a dict, a tuple."""

    running: Tensor  # set by register_buffer
    mask: Tensor | None

    def __init__(self) -> None:
        super().__init__()
        self.first = Linear(3, 4)
        self.blocks: list[Module] = [Linear(4, 4), ReLU(), Linear(4, 4, bias=False)]
        self.heads = {"a": Linear(4, 2), "b": Linear(4, 1)}
        self.pair = (GELU(), Linear(2, 2))
        self.shared = self.first  # the same module twice: its parameters once
        self.scale = Tensor([2.0])  # not trainable
        self.register_buffer("running", Tensor([0.0], requires_grad=True))  # a buffer, never a parameter
        self.tied = self.first.weight  # the same parameter again

    def forward(self, x: Tensor) -> Tensor:
        h = self.first(x)
        for block in self.blocks:
            h = block(h)
        out: Tensor = self.heads["a"](h) * self.scale
        return out


# ---- discovery, modes and buffers -------------------------------------------------------------


def test_parameters_found_in_attributes_lists_dicts_and_tuples_without_repeats(seeded: None) -> None:
    net = Net()
    block0, block2 = net.blocks[0], net.blocks[2]
    assert isinstance(block0, Linear) and isinstance(block2, Linear)
    expected = [
        net.first.weight, net.first.bias,
        block0.weight, block0.bias,
        block2.weight,
        net.heads["a"].weight, net.heads["a"].bias,
        net.heads["b"].weight, net.heads["b"].bias,
        net.pair[1].weight, net.pair[1].bias,
    ]
    params = net.parameters()
    assert [id(p) for p in params] == [id(p) for p in expected]
    assert all(p.requires_grad for p in params)
    assert all(p is not net.scale and p is not net.running for p in params)
    assert [p.shape for p in params] == [
        (3, 4), (4,), (4, 4), (4,), (4, 4), (4, 2), (2,), (4, 1), (1,), (2, 2), (2,),
    ]


def test_modules_lists_direct_children_in_assignment_order(seeded: None) -> None:
    net = Net()
    names = [type(m).__name__ for m in net.modules()]
    assert names == ["Linear", "Linear", "ReLU", "Linear", "Linear", "Linear", "GELU", "Linear", "Linear"]


def test_register_buffer_sets_the_attribute_and_stays_out_of_parameters(seeded: None) -> None:
    net = Net()
    assert net.running.numpy().tolist() == [0.0]
    net.register_buffer("mask", None)
    assert net.mask is None
    assert len(net.parameters()) == 11


def test_train_and_eval_recurse_into_every_child(seeded: None) -> None:
    net = Net()
    every = [net, net.first, *net.blocks, *net.heads.values(), *net.pair]
    assert all(m.training for m in every)
    assert net.eval() is net
    assert not any(m.training for m in every)
    net.train()
    assert all(m.training for m in every)
    net.train(False)
    assert not any(m.training for m in every)


def test_forward_must_be_defined() -> None:
    with pytest.raises(NotImplementedError) as info:
        Module()(Tensor([1.0]))
    assert str(info.value) == "Module must define forward()"


# ---- Linear: the seed's initialisation -----------------------------------------------------------


def test_linear_draws_the_seeds_weights_from_the_global_rng() -> None:
    state = np.random.get_state()
    try:
        xp.random.seed(42)
        layer = Linear(5, 3)
        np.random.seed(42)
        expected = np.random.randn(5, 3) * np.sqrt(2.0 / 5)
    finally:
        np.random.set_state(state)
    assert layer.weight.numpy().tobytes() == expected.tobytes()
    assert layer.weight.dtype == np.float64
    assert layer.bias is not None
    assert layer.bias.numpy().tolist() == [0.0, 0.0, 0.0]
    assert layer.bias.dtype == np.float64


def test_linear_forward_matches_the_functional_layer(seeded: None) -> None:
    layer = Linear(3, 2)
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
    assert layer.bias is not None
    expected = x @ layer.weight.numpy() + layer.bias.numpy()
    np.testing.assert_array_equal(layer(Tensor(x)).numpy(), expected)


# ---- gradients: accumulation, zero_grad, no_grad ---------------------------------------------------


def test_grad_accumulates_across_backward_calls_as_in_pytorch() -> None:
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (w * w).sum().backward()
    assert w.grad is not None
    assert w.grad.numpy().tolist() == [2.0, 4.0]
    (w * 3.0).sum().backward()
    assert w.grad.numpy().tolist() == [5.0, 7.0]


def test_zero_grad_sets_grads_to_none(seeded: None) -> None:
    model = Sequential(Linear(3, 2), ReLU(), Linear(2, 2))
    loss = CrossEntropyLoss()(model(Tensor(np.ones((4, 3)))), Tensor(np.array([0, 1, 1, 0])))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_optimizer_zero_grad_sets_grads_to_none(seeded: None) -> None:
    model = Linear(2, 1)
    opt = SGD(model.parameters(), lr=0.1)
    (model(Tensor(np.ones((1, 2)))) * 1.0).sum().backward()
    assert model.weight.grad is not None
    opt.zero_grad()
    assert model.weight.grad is None and model.bias is not None and model.bias.grad is None


def test_no_grad_records_nothing() -> None:
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with no_grad():
        y = w * 2.0
        assert not tg.is_recording()
    assert not y.requires_grad
    with pytest.raises(RuntimeError) as info:
        y.sum().backward()
    assert str(info.value) == NO_GRAD_MESSAGE


def test_no_grad_pauses_an_open_tape() -> None:
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    z = w * 1.0  # opens the ambient tape
    with no_grad():
        c = w * 5.0  # a constant: no record, no gradient through it
        assert not tg.is_recording()
    assert tape_open()
    (z + c).sum().backward()
    assert w.grad is not None
    assert w.grad.numpy().tolist() == [1.0, 1.0]


def test_backward_on_a_tensor_that_does_not_require_grad() -> None:
    x = Tensor(np.array([1.0, 2.0]))
    with pytest.raises(RuntimeError) as info:
        (x * x).sum().backward()
    assert str(info.value) == NO_GRAD_MESSAGE


def test_backward_twice_on_the_same_loss_is_refused() -> None:
    w = Tensor(np.array([1.0]), requires_grad=True)
    loss = (w * w).sum()
    loss.backward()
    with pytest.raises(RuntimeError) as info:
        loss.backward()
    assert str(info.value) == FREED_MESSAGE
    assert w.grad is not None and w.grad.numpy().tolist() == [2.0]


# ---- graphs: one per loss, freed by its backward(), as in PyTorch ---------------------------------


def two_nets(seed: int = 0) -> tuple[Sequential, torch.nn.Sequential]:
    """A small wrapper MLP and the same MLP in PyTorch, in float64."""
    rng = np.random.default_rng(seed)
    pairs = [(Linear(4, 3), torch.nn.Linear(4, 3).double()), (Linear(3, 2), torch.nn.Linear(3, 2).double())]
    for layer, twin in pairs:
        w, b = rng.standard_normal((twin.in_features, twin.out_features)), rng.standard_normal(twin.out_features)
        assert layer.bias is not None
        layer.weight.data, layer.bias.data = w, b
        with torch.no_grad():
            twin.weight.copy_(torch.from_numpy(w.T.copy()))
            twin.bias.copy_(torch.from_numpy(b))
    (first, t_first), (second, t_second) = pairs
    return Sequential(first, ReLU(), second), torch.nn.Sequential(t_first, torch.nn.ReLU(), t_second)


def assert_grads_match(ours: Sequential, theirs: torch.nn.Sequential) -> None:
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None
        expected = q.grad.numpy().T if q.grad.ndim == 2 else q.grad.numpy()
        np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-12, atol=1e-14)


BATCHES = [(np.random.default_rng(k).standard_normal((5, 4)), np.array([0, 1, 1, 0, 1])) for k in range(2)]


def test_zero_grad_between_forward_and_backward_keeps_the_loss_graph() -> None:
    ours, theirs = two_nets()
    opt, topt = SGD(ours.parameters(), lr=0.1), torch.optim.SGD(theirs.parameters(), lr=0.1)
    (x, y), (tx, ty) = BATCHES[0], tuple(map(torch.from_numpy, BATCHES[0]))
    loss = CrossEntropyLoss()(ours(Tensor(x)), Tensor(y))
    opt.zero_grad()  # after the forward pass, as many PyTorch loops do
    loss.backward()
    tloss = torch.nn.functional.cross_entropy(theirs(tx), ty)
    topt.zero_grad()
    torch.autograd.backward(tloss)
    assert_grads_match(ours, theirs)


def test_two_losses_recorded_before_either_backward_both_backpropagate() -> None:
    ours, theirs = two_nets()
    losses = [CrossEntropyLoss()(ours(Tensor(x)), Tensor(y)) for x, y in BATCHES]
    tlosses = [torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)) for x, y in BATCHES]
    for loss, tloss in zip(losses, tlosses, strict=True):
        loss.backward()
        torch.autograd.backward(tloss)
    assert_grads_match(ours, theirs)
    assert not tape_open()  # both graphs freed: the tape closed


def test_a_shared_graph_needs_retain_graph_for_its_second_backward() -> None:
    ours, theirs = two_nets()
    x = BATCHES[0][0]
    hidden = ours(Tensor(x))
    (hidden * hidden).sum().backward()
    with pytest.raises(RuntimeError) as info:
        hidden.sum().backward()
    assert str(info.value) == FREED_MESSAGE
    ours.zero_grad()
    hidden = ours(Tensor(x))
    (hidden * hidden).sum().backward(retain_graph=True)
    hidden.sum().backward()
    thidden = theirs(torch.from_numpy(x))
    torch.autograd.backward((thidden * thidden).sum(), retain_graph=True)
    torch.autograd.backward(thidden.sum())
    assert_grads_match(ours, theirs)


@pytest.mark.parametrize("other_live_result", [False, True], ids=["alone", "with-another-graph"])
def test_backward_inside_no_grad_works_and_leaves_one_tape(other_live_result: bool) -> None:
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (w * w).sum()
    other = w * 3.0 if other_live_result else None
    with no_grad():
        loss.backward()  # allowed in PyTorch too
    assert w.grad is not None and w.grad.numpy().tolist() == [2.0, 4.0]
    assert tape_open() == other_live_result  # the tape closed with its last graph
    (w * 2.0).sum().backward()
    assert w.grad.numpy().tolist() == [4.0, 6.0]
    if other is not None:
        other.sum().backward()
        assert w.grad.numpy().tolist() == [7.0, 9.0]
    assert not tape_open()


def test_backward_of_a_leaf_gives_its_output_gradient() -> None:
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    w.backward(Tensor(np.array([3.0, 4.0])))
    assert w.grad is not None and w.grad.numpy().tolist() == [3.0, 4.0]


def test_a_replayed_step_frees_a_graph_left_open_before_it(seeded: None) -> None:
    model = Linear(2, 1)
    opt = SGD(model.parameters(), lr=0.1)

    def step(x: Tensor) -> Tensor:
        opt.zero_grad()
        loss: Tensor = model(x).sum()
        loss.backward()
        opt.step()
        return loss

    pending = model(Tensor(np.ones((1, 2)))).sum()
    tl_replay(step, model, opt)(Tensor(np.ones((1, 2))))
    with pytest.raises(RuntimeError) as info:
        pending.backward()
    assert str(info.value) == FREED_MESSAGE


def test_integer_tensors_cannot_require_grad() -> None:
    with pytest.raises(TypeError) as info:
        Tensor(np.array([1, 2]), requires_grad=True)
    assert str(info.value) == "Tensor: only floating tensors can require grad, this one has dtype int64"


def test_detach_cuts_the_graph() -> None:
    w = Tensor(np.array([3.0]), requires_grad=True)
    loss = (w * w.detach()).sum()
    loss.backward()
    assert w.grad is not None and w.grad.numpy().tolist() == [3.0]


# ---- memory: an evaluation pass never backpropagated ------------------------------------------------


class Probe(Module):
    """Identity that keeps a weak reference to the array flowing through it."""

    def __init__(self) -> None:
        super().__init__()
        self._refs: list[weakref.ref[Any]] = []

    def forward(self, x: Tensor) -> Tensor:
        self._refs.append(weakref.ref(x.data))
        return x


def test_eval_forward_then_zero_grad_releases_the_tape(seeded: None) -> None:
    probe = Probe()
    model = Sequential(Linear(6, 5), ReLU(), probe, Linear(5, 3))
    opt = Adam(model.parameters(), lr=1e-3)
    out = model(Tensor(np.ones((7, 6))))  # as the seed's validation pass: never backpropagated
    del out
    gc.collect()
    assert probe._refs[0]() is not None  # the ambient tape holds the activation
    opt.zero_grad()
    gc.collect()
    assert probe._refs[0]() is None


def test_zero_grad_frees_the_dead_graphs_and_keeps_a_live_one(seeded: None) -> None:
    probe = Probe()
    model = Sequential(Linear(6, 5), ReLU(), probe, Linear(5, 3))
    kept = model(Tensor(np.ones((7, 6))))
    model(Tensor(np.ones((4, 6))))  # dropped at once
    model.zero_grad()
    gc.collect()
    assert probe._refs[0]() is not None and probe._refs[1]() is None
    kept.sum().backward()  # its graph is intact
    assert all(p.grad is not None for p in model.parameters())
    del kept
    gc.collect()
    assert probe._refs[0]() is None and not tape_open()


def test_a_live_validation_output_does_not_let_the_open_tape_grow(seeded: None) -> None:
    from tapegrad.torchlike import _autograd

    model = Sequential(Linear(6, 5), ReLU(), Linear(5, 3))
    opt = Adam(model.parameters(), lr=1e-3)
    criterion = CrossEntropyLoss()
    val_outputs = model(Tensor(np.ones((4, 6))))  # kept alive, as the seed's loop keeps it
    kept = len(_autograd._AMBIENT.tape or [])
    sizes = []
    for _ in range(30):
        opt.zero_grad()
        outputs = model(Tensor(np.ones((2, 6))))
        criterion(outputs, Tensor(np.array([0, 2]))).backward()
        opt.step()  # works on raw arrays: nothing recorded
        sizes.append((len(_autograd._AMBIENT.tape or []), len(_autograd._AMBIENT.outputs)))
    assert all(records == kept for records, _ in sizes)
    assert max(refs for _, refs in sizes[5:]) <= max(refs for _, refs in sizes[:5])
    assert val_outputs.requires_grad


def test_module_zero_grad_also_releases_the_tape(seeded: None) -> None:
    probe = Probe()
    model = Sequential(Linear(6, 5), probe, GELU())
    model(Tensor(np.ones((2, 6))))
    gc.collect()
    assert probe._refs[0]() is not None
    model.zero_grad()
    gc.collect()
    assert probe._refs[0]() is None


def test_backward_releases_the_tape(seeded: None) -> None:
    probe = Probe()
    model = Sequential(Linear(6, 5), probe, ReLU())
    loss = model(Tensor(np.ones((2, 6)))).sum()
    loss.backward()
    del loss
    gc.collect()
    assert probe._refs[0]() is None
    assert not tape_open()


# ---- losses and optimizers --------------------------------------------------------------------------


def test_losses_match_the_functional_ones() -> None:
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    labels = np.array([1, 2])
    ce = CrossEntropyLoss()(Tensor(logits), Tensor(labels)).item()
    assert ce == nn.cross_entropy(tg.tensor(logits), tg.tensor(labels)).item()
    per_example = CrossEntropyLoss(reduction="none")(Tensor(logits), Tensor(labels))
    assert per_example.shape == (2,)
    assert MSELoss()(Tensor(np.array([1.0, 2.0])), Tensor(np.array([0.0, 0.0]))).item() == 2.5
    assert MSELoss(reduction="sum")(Tensor(np.array([1.0, 2.0])), Tensor(np.array([0.0, 0.0]))).item() == 5.0


def test_sgd_step_is_literal() -> None:
    w = Tensor(np.array([1.0, -1.0]), requires_grad=True)
    opt = SGD([w], lr=0.5)
    (w * w).sum().backward()
    opt.step()
    assert w.numpy().tolist() == [0.0, 0.0]


def test_a_parameter_without_grad_stays_put() -> None:
    a = Tensor(np.array([1.0]), requires_grad=True)
    b = Tensor(np.array([5.0]), requires_grad=True)
    opt = Adam([a, b], lr=0.1)
    (a * 2.0).sum().backward()
    opt.step()
    assert b.numpy().tolist() == [5.0]
    assert a.numpy().tolist() == pytest.approx([0.9], rel=1e-7)


def test_optimizer_refuses_empty_or_foreign_parameters() -> None:
    with pytest.raises(ValueError) as info:
        Adam([])
    assert str(info.value) == "Adam: got an empty parameter list"
    with pytest.raises(TypeError) as info2:
        SGD([tg.tensor([1.0])], lr=0.1)  # type: ignore[list-item]
    assert str(info2.value) == "SGD: parameters must be torchlike Tensors, got Tensor"


def test_tensor_surface() -> None:
    t = Tensor([[1.0, 2.0], [3.0, 4.0]])
    assert t.shape == (2, 2) and t.ndim == 2 and t.dtype == np.float32
    assert t.sum().item() == 10.0
    assert t.T.numpy().tolist() == [[1.0, 3.0], [2.0, 4.0]]
    t.data = np.zeros((1, 3))
    assert t.shape == (1, 3) and t.dtype == np.float64
    assert repr(Tensor(np.array([1.0]), requires_grad=True)) == (
        "torchlike.Tensor([1.], dtype=float64, device=cpu, requires_grad=True)"
    )


def test_adam_leaves_the_moments_of_a_parameter_without_grad_untouched() -> None:
    # As the seed's Adam (`if p.grad is None: continue`) and PyTorch: a step in which a
    # parameter has no gradient changes neither it nor its moments; the step count is global.
    a = Tensor(np.array([1.0]), requires_grad=True)
    b = Tensor(np.array([5.0]), requires_grad=True)
    opt = Adam([a, b], lr=0.1)
    for uses_b in (True, False, True):
        opt.zero_grad()
        ((a * 2.0) + (b * 3.0 if uses_b else 0.0)).sum().backward()
        opt.step()
    # The seed's formulas for b: gradient 3 at t = 1 and t = 3, no update at t = 2.
    m = v = 0.0
    expected_b = 5.0
    for t, g in ((1, 3.0), (3, 3.0)):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        expected_b -= 0.1 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    assert b.numpy().tolist() == pytest.approx([expected_b], rel=1e-12)
    # The step count (a 0-d int64 array, so that a step can be traced) counted every step.
    adam_state, scale_state = opt.state
    for c in (adam_state.step, scale_state.count):
        assert c.shape == () and c.dtype == np.int64 and int(c.item()) == 3
