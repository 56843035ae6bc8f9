"""The wrapper where it used to go silently wrong (issue 11, section 3), checked against PyTorch.

- hand-written updates (``p -= lr * p.grad`` under ``no_grad()``) update in place;
- a forward pass never backpropagated cannot keep the tape recording, nor let it grow;
- ``backward()`` walks only the graph that reaches its tensor;
- comparisons are element-wise and ``float(loss)`` works;
- ``torchlike.replay`` retraces when the module or optimizer state it read changes.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import torch

import tapegrad as tg
import tapegrad.torchlike as tl
from tapegrad.torchlike import _autograd

TORCH_IN_PLACE_LEAF = "a leaf Variable that requires grad is being used in an in-place operation."


@pytest.fixture(autouse=True)
def _fresh_ambient_tape() -> Iterator[None]:
    """Every test starts and ends with no ambient tape, whatever the previous one left."""
    _autograd.release()
    yield
    _autograd.release()


class TorchMLP(torch.nn.Module):
    """PyTorch's twin of `pair`'s wrapper MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = torch.nn.Linear(3, 8, dtype=torch.float64)
        self.l2 = torch.nn.Linear(8, 2, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.l2(torch.relu(self.l1(x)))
        return out


def layers(ours: tl.Sequential) -> tuple[tl.Linear, tl.Linear]:
    first, last = ours.layers[0], ours.layers[2]
    assert isinstance(first, tl.Linear) and isinstance(last, tl.Linear)
    return first, last


def pair(seed: int = 0) -> tuple[tl.Sequential, TorchMLP]:
    """The same 3-8-2 MLP in the wrapper and in PyTorch (float64, equal weights)."""
    rng = np.random.default_rng(seed)
    ours = tl.Sequential(tl.Linear(3, 8), tl.ReLU(), tl.Linear(8, 2))
    theirs = TorchMLP()
    for layer, tlayer in zip(layers(ours), [theirs.l1, theirs.l2]):
        assert layer.bias is not None
        layer.weight.data = rng.standard_normal(layer.weight.shape)
        layer.bias.data = rng.standard_normal(layer.bias.shape)
        with torch.no_grad():
            tlayer.weight.copy_(torch.from_numpy(layer.weight.data.T))
            tlayer.bias.copy_(torch.from_numpy(layer.bias.data))
    return ours, theirs


def torch_sgd(theirs: torch.nn.Module, lr: float) -> None:
    """``p -= lr * p.grad`` under ``no_grad()``, then forget the gradients."""
    with torch.no_grad():
        for q in theirs.parameters():
            assert q.grad is not None
            q.sub_(lr * q.grad)
            q.grad = None


def torch_loss(theirs: TorchMLP, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
    loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
    torch.autograd.backward(loss)
    return loss


def data(n: int, seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((5, 3)), rng.integers(0, 2, 5)) for _ in range(n)]


def assert_same_weights(ours: tl.Sequential, theirs: TorchMLP) -> None:
    for layer, tlayer in zip(layers(ours), [theirs.l1, theirs.l2]):
        assert layer.bias is not None
        np.testing.assert_allclose(layer.weight.data, tlayer.weight.detach().numpy().T, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(layer.bias.data, tlayer.bias.detach().numpy(), rtol=1e-12, atol=1e-14)


# ---- hand-written updates --------------------------------------------------------------------


def test_manual_sgd_under_no_grad_updates_in_place_as_in_pytorch() -> None:
    ours, theirs = pair()
    params = ours.parameters()
    for x, y in data(5):
        loss = tl.CrossEntropyLoss()(ours(tl.Tensor(x)), tl.Tensor(y))
        loss.backward()
        with tl.no_grad():
            for p in ours.parameters():
                assert p.grad is not None
                p -= 0.1 * p.grad
                p.grad = None
        torch_loss(theirs, x, y)
        torch_sgd(theirs, 0.1)
    assert_same_weights(ours, theirs)
    # The same objects, still trainable leaves.
    assert [id(p) for p in ours.parameters()] == [id(p) for p in params]
    assert all(p.requires_grad and p.is_leaf for p in params)


def test_updating_a_module_attribute_in_place_keeps_the_parameter() -> None:
    ours, theirs = pair()
    first = layers(ours)[0]
    weight = first.weight
    for x, y in data(3):
        tl.CrossEntropyLoss()(ours(tl.Tensor(x)), tl.Tensor(y)).backward()
        torch_loss(theirs, x, y)
        with tl.no_grad():
            assert first.weight.grad is not None
            first.weight -= 0.5 * first.weight.grad
        with torch.no_grad():
            assert theirs.l1.weight.grad is not None
            theirs.l1.weight -= 0.5 * theirs.l1.weight.grad
        for p, q in zip(ours.parameters(), theirs.parameters()):
            p.grad, q.grad = None, None
    assert first.weight is weight and weight.requires_grad and len(ours.parameters()) == 4
    np.testing.assert_allclose(first.weight.data, theirs.l1.weight.detach().numpy().T, rtol=1e-12)


@pytest.mark.parametrize("symbol", ["+=", "-=", "*=", "/="])
def test_an_in_place_update_of_a_leaf_outside_no_grad_is_refused_as_in_pytorch(symbol: str) -> None:
    w = tl.Tensor([1.0, 2.0], requires_grad=True)
    tw = torch.tensor([1.0, 2.0], requires_grad=True)
    update: Callable[[object], object] = {
        "+=": lambda t: t.__iadd__(1.0), "-=": lambda t: t.__isub__(1.0),
        "*=": lambda t: t.__imul__(2.0), "/=": lambda t: t.__itruediv__(2.0),
    }[symbol]
    with pytest.raises(RuntimeError, match=re.escape(TORCH_IN_PLACE_LEAF)):
        update(tw)
    with pytest.raises(RuntimeError) as info:
        update(w)
    assert str(info.value) == (
        f"`{symbol}`: a leaf Variable that requires grad is being used in an in-place operation. "
        "Update parameters inside `with torchlike.no_grad():`, as in PyTorch"
    )
    assert w.data.tolist() == [1.0, 2.0]


def test_an_in_place_op_on_a_computed_tensor_is_recorded_as_in_pytorch() -> None:
    w = tl.Tensor([1.0, 2.0], requires_grad=True)
    h = w * 3.0
    h += w * w
    h *= 2.0
    h.sum().backward()
    tw = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    th = tw * 3.0
    th += tw * tw
    th *= 2.0
    torch.autograd.backward(th.sum())
    assert w.grad is not None and tw.grad is not None
    assert w.grad.numpy().tolist() == tw.grad.numpy().tolist()


def test_an_in_place_update_keeps_the_shape_and_dtype() -> None:
    w = tl.Tensor(np.zeros(2, dtype=np.float32), requires_grad=True)
    with tl.no_grad():
        w += 1.0
        w *= tl.Tensor(np.full(2, 3.0, dtype=np.float32))
    assert w.dtype == np.float32 and w.data.tolist() == [3.0, 3.0]
    with tl.no_grad(), pytest.raises(TypeError, match=re.escape("`add`: operands have dtypes float32 and float64")):
        w += np.ones(2)  # as every op: mixed float widths are never promoted silently
    with tl.no_grad(), pytest.raises(RuntimeError) as info:
        w += np.ones((3, 2), dtype=np.float32)
    assert str(info.value) == (
        "`+=`: the result has shape (3, 2) but the tensor updated in place has shape (2,); "
        "the right-hand side must broadcast to the tensor's shape"
    )
    counts = tl.Tensor(np.array([1, 2]))
    with pytest.raises(RuntimeError) as info:
        counts += 0.5
    assert str(info.value) == (
        "`+=`: the result has dtype float64, which cannot be stored in place in a tensor of dtype "
        "int64; cast the tensor first, as in PyTorch"
    )


# ---- a forward pass never backpropagated ----------------------------------------------------------


def test_a_forward_pass_never_backpropagated_does_not_record_functional_code() -> None:
    model = tl.Sequential(tl.Linear(3, 4), tl.ReLU(), tl.Linear(4, 2))
    kept = model(tl.Tensor(np.ones((2, 3))))  # a live graph, never backpropagated
    records = len(_autograd._AMBIENT.tape or [])
    assert records > 0 and not tg.is_recording()
    w = tg.tensor([1.0, 2.0])
    for _ in range(10):
        w = w * 2.0 + 1.0  # functional code: recorded on no tape
    assert len(_autograd._AMBIENT.tape or []) == records
    with tg.Tape() as tape:  # a functional tape of its own works as usual
        loss = (w * w).sum()
    assert tape.gradient(loss, w).numpy().tolist() == (2 * w.numpy()).tolist()
    assert kept.requires_grad


def test_forward_passes_never_backpropagated_keep_memory_flat_and_replay_working() -> None:
    model = tl.Sequential(tl.Linear(20, 64), tl.ReLU(), tl.Linear(64, 10))
    x = tl.Tensor(np.ones((32, 20)))
    w = tg.tensor(np.ones(16))

    def steps(n: int) -> None:
        nonlocal w
        for _ in range(n):
            model(x).detach()  # a prediction, never backpropagated
            tl.CrossEntropyLoss()(model(x), tl.Tensor(np.zeros(32, dtype=np.int64))).item()  # printed only
            w = w * 0.5 + 1.0  # functional code between the wrapper's steps

    steps(300)  # warm up: caches, the first sweeps
    tracemalloc.start()
    try:
        steps(500)
        tracemalloc.reset_peak()
        steps(500)
        early = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        steps(1500)
        late = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The tape is swept whenever it doubles, so memory rises and falls, but its peak
    # stays put (it grew by 25 MB per 1,000 steps when every later op was recorded).
    assert late - early < 100_000, (early, late)
    assert len(_autograd._AMBIENT.tape or []) <= 2 * _autograd.SWEEP_AT_LEAST
    assert not tg.is_recording()

    @tg.replay
    def double(v: tg.Tensor) -> tg.Tensor:
        return v * 2.0

    assert double(w).numpy().tolist() == double(w).numpy().tolist() == (2 * w.numpy()).tolist()
    assert double.replays == 1


def test_a_dead_forward_pass_is_freed_by_the_next_wrapper_op() -> None:
    import gc
    import weakref

    model = tl.Sequential(tl.Linear(3, 4), tl.ReLU(), tl.Linear(4, 2))
    hidden = model.layers[0](tl.Tensor(np.ones((2, 3))))
    activation = weakref.ref(hidden.value.data)
    model.layers[2](model.layers[1](hidden)).detach()  # the prediction only: the graph is dead
    del hidden
    gc.collect()
    assert activation() is not None  # nothing has run since
    kept = model(tl.Tensor(np.ones((2, 3))))  # the next wrapper op frees the dead graph first
    gc.collect()
    assert activation() is None
    assert len(_autograd._AMBIENT.tape or []) == 3  # the live graph alone: one record per layer
    assert kept.requires_grad


def test_a_live_graph_survives_the_sweeps_of_dead_ones() -> None:
    ours, theirs = pair()
    x, y = data(1)[0]
    loss = tl.CrossEntropyLoss()(ours(tl.Tensor(x)), tl.Tensor(y))
    for _ in range(400):  # many dead graphs recorded after it: swept, the loss's graph kept
        ours(tl.Tensor(x)).detach()
    loss.backward()
    torch_loss(theirs, x, y)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        assert p.grad is not None and q.grad is not None
        np.testing.assert_allclose(p.grad.data, q.grad.numpy().T, rtol=1e-12, atol=1e-15)


# ---- backward() walks only its own graph -------------------------------------------------------------


def test_a_new_graph_after_a_dropped_branch_backpropagates_as_in_pytorch() -> None:
    x = tl.Tensor([1.0, 2.0], requires_grad=True)
    h = x * 2.0
    a = h * 3.0
    (h * 4.0).sum().backward()
    del a, h  # dropped without zero_grad()
    y = tl.Tensor(2.0, requires_grad=True)
    (y * 3.0).backward()
    assert y.grad is not None and y.grad.item() == 3.0
    assert x.grad is not None and x.grad.numpy().tolist() == [8.0, 8.0]


def test_micrograd_style_training_without_zero_grad_matches_pytorch() -> None:
    """Gradients reset by hand, never through zero_grad(); a side branch computed and dropped."""
    ours, theirs = pair()
    for x, y in data(6):
        first, last = layers(ours)
        hidden = first(tl.Tensor(x))
        side = hidden * 2.0  # a branch of this graph that is never backpropagated
        loss = tl.CrossEntropyLoss()(last(tl.ReLU()(hidden)), tl.Tensor(y))
        loss.backward()
        del side
        with tl.no_grad():
            for p in ours.parameters():
                assert p.grad is not None
                p -= 0.05 * p.grad
                p.grad = None
        tloss = torch_loss(theirs, x, y)
        torch_sgd(theirs, 0.05)
        assert float(loss) == pytest.approx(tloss.item(), rel=1e-12)
    assert_same_weights(ours, theirs)


# ---- comparisons and conversions ----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_comparisons_are_element_wise_as_in_pytorch(op: str) -> None:
    compare: Callable[[object, object], object] = {
        "==": lambda a, b: a == b, "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    }[op]
    a, b = [1.0, 2.0, 3.0], [1.0, 5.0, 0.0]
    ours = compare(tl.Tensor(a, requires_grad=True), tl.Tensor(b))
    theirs = compare(torch.tensor(a, requires_grad=True), torch.tensor(b))
    assert isinstance(ours, tl.Tensor) and isinstance(theirs, torch.Tensor)
    assert ours.dtype == np.bool_ and not ours.requires_grad
    assert ours.numpy().tolist() == theirs.tolist()
    ours, theirs = compare(tl.Tensor(a), 2.0), compare(torch.tensor(a), 2.0)
    assert isinstance(ours, tl.Tensor) and isinstance(theirs, torch.Tensor)
    assert ours.numpy().tolist() == theirs.tolist()


def test_equal_tensors_compare_equal_and_still_hash_by_identity() -> None:
    a, b = tl.Tensor([1.0, 2.0]), tl.Tensor([1.0, 2.0])
    assert bool((a == b).numpy().all())
    assert len({a, b}) == 2 and {a: 1}[a] == 1  # as torch.Tensor: by identity
    model = tl.Sequential(tl.Linear(2, 2), tl.Linear(2, 2))
    params = model.parameters()
    assert len(set(params)) == 4 and params[0] in params  # `in` checks identity first, as for torch
    assert bool(tl.Tensor(2.0) == tl.Tensor(2.0))
    t, tt = tl.Tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])
    ours: tuple[object, ...] = (t == None, t != None, t == "a")  # noqa: E711
    theirs: tuple[object, ...] = (tt == None, tt != None, tt == "a")  # noqa: E711
    assert ours == theirs == (False, True, False)


def test_float_and_int_of_a_one_element_tensor() -> None:
    w = tl.Tensor([1.5, 2.0], requires_grad=True)
    loss = (w * w).sum()
    assert float(loss) == 6.25 == float(torch.tensor([1.5, 2.0]).pow(2).sum())
    assert int(tl.Tensor([3.0])) == 3 == int(torch.tensor([3.0]))
    with pytest.raises(ValueError) as info:
        float(w)
    assert str(info.value) == (
        "item(): only a tensor with one element can be converted to a Python number, this one "
        "has shape (2,); index or reduce it first"
    )


# ---- torchlike.replay guards on the state the step reads ---------------------------------------------


class Gated(tl.Module):
    """A layer whose forward pass reads its mode and a plain attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.body = tl.Sequential(tl.Linear(3, 8), tl.ReLU(), tl.Linear(8, 2))
        self.scale = 1.0

    def forward(self, x: tl.Tensor) -> tl.Tensor:
        out: tl.Tensor = self.body(x) * self.scale
        return out * 0.5 if self.training else out


Step = Callable[[tl.Tensor, tl.Tensor], tl.Tensor]


def twins(lr: float = 0.1) -> list[tuple[Gated, tl.SGD, tl.CrossEntropyLoss, Step]]:
    """The same model, optimizer and step twice: the first to run eagerly, the second replayed."""
    made: list[tuple[Gated, tl.SGD, tl.CrossEntropyLoss, Step]] = []
    for _ in range(2):
        np.random.seed(0)
        model = Gated()
        opt = tl.SGD(model.parameters(), lr=lr)
        criterion = tl.CrossEntropyLoss()

        def step(x: tl.Tensor, y: tl.Tensor, model: Gated = model, opt: tl.SGD = opt,
                 criterion: tl.CrossEntropyLoss = criterion) -> tl.Tensor:
            opt.zero_grad()
            loss: tl.Tensor = criterion(model(x), y)
            loss.backward()
            opt.step()
            return loss

        made.append((model, opt, criterion, step))
    return made


def run_both(changes: Callable[[Gated, tl.SGD, tl.CrossEntropyLoss], object]) -> tuple[Gated, Gated, int]:
    """Three steps, ``changes`` applied to both twins, three more; eager and replayed must agree."""
    (eager_model, eager_opt, eager_crit, eager), (model, opt, crit, step) = twins()
    replayed = tl.replay(step, model, opt)
    for i, (x, y) in enumerate(data(6)):
        if i == 3:
            changes(eager_model, eager_opt, eager_crit)
            changes(model, opt, crit)
        assert eager(tl.Tensor(x), tl.Tensor(y)).item() == replayed(tl.Tensor(x), tl.Tensor(y)).item()
    for p, q in zip(eager_model.parameters(), model.parameters(), strict=True):
        assert np.array_equal(p.data, q.data)
    return eager_model, model, replayed.replayed.traces  # type: ignore[attr-defined]


def test_replay_retraces_after_eval() -> None:
    run_both(lambda model, opt, crit: model.eval())


def test_replay_retraces_after_a_plain_attribute_changes() -> None:
    def change(model: Gated, opt: tl.SGD, crit: tl.CrossEntropyLoss) -> None:
        model.scale = 3.0

    run_both(change)


def test_replay_retraces_after_a_layer_is_frozen() -> None:
    frozen: list[np.ndarray] = []

    def freeze(model: Gated, opt: tl.SGD, crit: tl.CrossEntropyLoss) -> None:
        first = model.body.layers[0]
        assert isinstance(first, tl.Linear)
        first.weight.requires_grad = False
        frozen.append(first.weight.data.copy())

    eager_model, model, _ = run_both(freeze)
    for m, before in zip([eager_model, model], frozen):
        first = m.body.layers[0]
        assert isinstance(first, tl.Linear)
        assert np.array_equal(first.weight.data, before)  # a frozen layer stays put


def test_replay_retraces_after_the_learning_rate_changes() -> None:
    def change(model: Gated, opt: tl.SGD, crit: tl.CrossEntropyLoss) -> None:
        for group in opt.param_groups:
            group["lr"] = 0.5

    run_both(change)


def test_replay_retraces_when_an_object_the_step_names_changes() -> None:
    def change(model: Gated, opt: tl.SGD, crit: tl.CrossEntropyLoss) -> None:
        crit.reduction = "sum"  # the criterion is not passed to replay(): found in the closure

    run_both(change)


def test_a_mode_the_step_sets_itself_is_set_again_by_each_replay() -> None:
    (eager_model, eager_opt, _, _), (model, opt, _, _) = twins()

    def make(m: Gated, o: tl.SGD) -> Step:
        def step(x: tl.Tensor, y: tl.Tensor) -> tl.Tensor:
            m.train()
            o.zero_grad()
            loss: tl.Tensor = tl.CrossEntropyLoss()(m(x), y)
            loss.backward()
            o.step()
            return loss
        return step

    eager, replayed = make(eager_model, eager_opt), tl.replay(make(model, opt), model, opt)
    for x, y in data(8):
        for m in (eager_model, model):
            m.eval()  # as a validation pass between steps does
        assert eager(tl.Tensor(x), tl.Tensor(y)).item() == replayed(tl.Tensor(x), tl.Tensor(y)).item()
        assert model.training and all(child.training for child in model.body.layers)
    assert replayed.replayed.replays >= 5  # type: ignore[attr-defined]


def test_learning_rate_changes_match_pytorch() -> None:
    ours, theirs = pair()
    opt = tl.SGD(ours.parameters(), lr=0.1)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for i, (x, y) in enumerate(data(6)):
        if i == 3:
            for group in opt.param_groups:
                group["lr"] = 0.02
            for tgroup in topt.param_groups:
                tgroup["lr"] = 0.02
        opt.zero_grad()
        topt.zero_grad()
        tl.CrossEntropyLoss()(ours(tl.Tensor(x)), tl.Tensor(y)).backward()
        torch_loss(theirs, x, y)
        opt.step()
        topt.step()
    assert_same_weights(ours, theirs)


def test_a_learning_rate_changed_every_call_warns_naming_it() -> None:
    _, (model, opt, crit, step) = twins()
    replayed = tl.replay(step, model, opt)
    x, y = data(1)[0]
    with pytest.warns(tg.ReplayRetraceWarning) as caught:
        for i in range(10):
            opt.param_groups[0]["lr"] = 0.1 / (i + 1)
            replayed(tl.Tensor(x), tl.Tensor(y))
    assert [str(w.message) for w in caught] == [
        "torchlike.replay: `step` has been traced 8 times; the last trace was caused by "
        "opt.param_groups[0]['lr'] changing. The state a step reads from its modules and optimizers "
        "(modes, requires_grad, plain attributes, param_groups) is part of the signature, as in "
        "torch.compile's guards, so a value that changes every call retraces every call: change it "
        "less often (once per epoch), or pass it as a tensor argument."
    ]


def test_changing_momentum_after_construction_is_refused() -> None:
    w = tl.Tensor([1.0], requires_grad=True)
    opt = tl.SGD([w], lr=0.1)
    opt.param_groups[0]["momentum"] = 0.9
    (w * w).sum().backward()
    with pytest.raises(ValueError) as info:
        opt.step()
    assert str(info.value) == (
        "SGD.step(): changing momentum in param_groups changes the optimizer's state (e.g. momentum "
        "from zero); set it when constructing the optimizer"
    )


def assert_step_refused(step: Step, model: Gated, opt: tl.SGD, message: str) -> None:
    """Replaying ``step`` once must raise ReplayError(``message``) and leave nothing cached."""
    replayed = tl.replay(step, model, opt)
    x, y = data(1)[0]
    with pytest.raises(tg.ReplayError) as info:
        replayed(tl.Tensor(x), tl.Tensor(y))
    assert str(info.value) == message
    assert replayed.replayed.cache_size == 0  # type: ignore[attr-defined]


def test_a_step_that_adds_state_to_its_module_is_refused() -> None:
    _, (model, opt, crit, _) = twins()

    def step(x: tl.Tensor, y: tl.Tensor) -> tl.Tensor:
        opt.zero_grad()
        setattr(model, "calls", getattr(model, "calls", 0) + 1)  # a new attribute, set while traced
        loss: tl.Tensor = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss

    assert_step_refused(
        step, model, opt,
        "torchlike.replay: the step added or removed attributes, parameters or modules of the "
        "objects it uses, which a replay cannot repeat; build the model and the optimizer before "
        "calling the step",
    )


def test_a_step_that_replaces_a_tensor_of_its_module_is_refused() -> None:
    _, (model, opt, crit, _) = twins()
    setattr(model, "offset", tl.Tensor(np.zeros(2)))

    def step(x: tl.Tensor, y: tl.Tensor) -> tl.Tensor:
        setattr(model, "offset", tl.Tensor(np.zeros(2)))  # eagerly: a fresh tensor every call
        opt.zero_grad()
        loss: tl.Tensor = crit(model(x), y)
        loss.backward()
        opt.step()
        return loss

    assert_step_refused(
        step, model, opt,
        "torchlike.replay: the step replaced model.offset, which a replay cannot repeat; change it "
        "outside the step",
    )


def test_more_than_one_param_group_is_refused() -> None:
    w, v = tl.Tensor([1.0], requires_grad=True), tl.Tensor([2.0], requires_grad=True)
    opt = tl.Adam([w], lr=0.1)
    opt.param_groups.append({"params": [v], "lr": 0.01})
    (w * v).sum().backward()
    with pytest.raises(ValueError) as info:
        opt.step()
    assert str(info.value) == (
        "Adam.step(): param_groups has 2 groups; this wrapper supports one. Use one optimizer per "
        "group of parameters."
    )


@pytest.mark.parametrize("update", ["in place", "optimizer"])
def test_backward_after_updating_a_leaf_it_read_is_refused_as_in_pytorch(update: str) -> None:
    ours, theirs = pair()
    x, y = data(1)[0]
    opt = tl.SGD(ours.parameters(), lr=0.1)
    tl.CrossEntropyLoss()(ours(tl.Tensor(x)), tl.Tensor(y)).backward()  # every parameter has a grad
    loss = tl.CrossEntropyLoss()(ours(tl.Tensor(x)), tl.Tensor(y))
    if update == "optimizer":
        opt.step()
    else:
        with tl.no_grad():
            for p in ours.parameters():
                assert p.grad is not None
                p -= 0.1 * p.grad
    with pytest.raises(RuntimeError) as info:
        loss.backward()
    assert str(info.value) == (
        "backward(): a leaf of shape (3, 8) that this graph read was updated in place after it was read (by `-=` and the like under "
        "no_grad(), or by optimizer.step()), so its gradient would be lost; call backward() before "
        "updating it. PyTorch refuses this too: \"one of the variables needed for gradient "
        "computation has been modified by an inplace operation\""
    )
    tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y))
    with torch.no_grad():
        for q in theirs.parameters():
            q.sub_(0.1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.backward(tloss)


def test_a_tensor_the_step_names_is_read_again_after_it_changes() -> None:
    made = twins()
    steps = []
    scales = []
    for model, opt, crit, _ in made:
        scale = tl.Tensor(np.array(2.0))  # neither a module's nor an optimizer's: read from the closure

        def step(x: tl.Tensor, y: tl.Tensor, model: Gated = model, opt: tl.SGD = opt,
                 crit: tl.CrossEntropyLoss = crit, scale: tl.Tensor = scale) -> tl.Tensor:
            opt.zero_grad()
            loss: tl.Tensor = crit(model(x) * scale, y)
            loss.backward()
            opt.step()
            return loss

        steps.append(step)
        scales.append(scale)
    eager, replayed = steps[0], tl.replay(steps[1], made[1][0], made[1][1])
    for i, (x, y) in enumerate(data(6)):
        if i == 3:
            for scale in scales:
                scale.data = np.array(-1.0)
        assert eager(tl.Tensor(x), tl.Tensor(y)).item() == replayed(tl.Tensor(x), tl.Tensor(y)).item()
    assert replayed.replayed.traces == 3  # type: ignore[attr-defined]


def test_a_replayed_step_with_a_hand_written_update_matches_pytorch() -> None:
    ours, theirs = pair()

    def step(x: tl.Tensor, y: tl.Tensor) -> tl.Tensor:
        loss: tl.Tensor = tl.CrossEntropyLoss()(ours(x), y)
        loss.backward()
        with tl.no_grad():
            for p in ours.parameters():
                assert p.grad is not None
                p -= 0.1 * p.grad
                p.grad = None
        return loss

    replayed = tl.replay(step, ours)
    for x, y in data(6):
        loss = replayed(tl.Tensor(x), tl.Tensor(y))
        tloss = torch_loss(theirs, x, y)
        torch_sgd(theirs, 0.1)
        assert loss.item() == pytest.approx(tloss.item(), rel=1e-12)
    assert_same_weights(ours, theirs)
    assert replayed.replayed.replays == 5  # type: ignore[attr-defined]
