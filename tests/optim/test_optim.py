"""Optimizers of `tapegrad.optim` against hand-written formulas and PyTorch.

Adam is checked step by step against the seed article's update, written out in
NumPy, and bit for bit against the same formula with Python-float bias
corrections; SGD against the textbook formulas and `torch.optim.SGD`. Updates
must be pure (no input is written, no output aliases an input), keep float32
float32, count steps in a 0-d int64 array (data, so that a traced step replays),
and refuse bad hyperparameters and mismatched state with pinned messages.
"""

from __future__ import annotations

import fractions
import math
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import pytest
import torch

import tapegrad as tg
from tapegrad import Tensor, optim

Array = np.ndarray[Any, Any]
SHAPES = {"w": (4, 3), "b": (3,), "s": ()}


def random_tree(seed: int, dtype: Any = np.float64) -> dict[str, Tensor]:
    """A dict of tensors with `SHAPES`, drawn from a fixed seed."""
    rng = np.random.default_rng(seed)
    return {k: tg.tensor(rng.standard_normal(shape).astype(dtype)) for k, shape in SHAPES.items()}


def arrays(tree: Any) -> list[Array]:
    """Every array in a pytree (Tensors' data; ints and other leaves are skipped)."""
    return [leaf.data for leaf in tg.tree.leaves(tree) if isinstance(leaf, Tensor)]


def float_arrays(tree: Any) -> list[Array]:
    """The floating-point arrays of a pytree: everything but the step counts."""
    return [a for a in arrays(tree) if a.dtype.kind == "f"]


def counts(state: Any) -> list[Tensor]:
    """The step counts in an optimizer state (`AdamState.step`, `ScaleState.count`)."""
    found = []
    for s in state:
        if isinstance(s, optim.AdamState):
            found.append(s.step)
        elif isinstance(s, optim.ScaleState):
            found.append(s.count)
    return found


def count(n: int) -> Tensor:
    """A step count as init() makes them: a 0-d int64 array."""
    return Tensor(np.array(n, dtype=np.int64))


def assert_count(t: Any, n: int) -> None:
    """``t`` is a step count, a Tensor holding a 0-d int64 ndarray, equal to ``n``."""
    assert isinstance(t, Tensor)
    assert type(t.data) is np.ndarray  # an array, not a NumPy scalar
    assert t.shape == () and t.dtype == np.int64
    assert int(t.item()) == n


# ---- Adam --------------------------------------------------------------------------------


def seed_adam_reference(
    params: dict[str, Array], grads: list[dict[str, Array]], lr: float, b1: float, b2: float, eps: float
) -> tuple[dict[str, Array], dict[str, Array], dict[str, Array]]:
    """The seed article's `Adam.step`, literally, in NumPy float64."""
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(x) for k, x in params.items()}
    for t, g in enumerate(grads, start=1):
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * (g[k] ** 2)
            m_hat = m[k] / (1 - b1**t)
            v_hat = v[k] / (1 - b2**t)
            p[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return p, m, v


@pytest.mark.parametrize(
    ("lr", "b1", "b2", "eps"), [(1e-3, 0.9, 0.999, 1e-8), (0.05, 0.5, 0.9, 1e-3), (0.01, 0.0, 0.99, 1e-8)]
)
def test_adam_matches_the_seed_formula_over_20_steps(lr: float, b1: float, b2: float, eps: float) -> None:
    params = random_tree(0)
    grad_trees = [random_tree(100 + i) for i in range(20)]
    opt = optim.adam(lr, b1, b2, eps)
    state = opt.init(params)
    p = params
    for g in grad_trees:
        p, state = opt.update(g, state, p)
    ref_p, ref_m, ref_v = seed_adam_reference(
        {k: t.numpy() for k, t in params.items()},
        [{k: t.numpy() for k, t in g.items()} for g in grad_trees],
        lr, b1, b2, eps,
    )
    adam_state = state[0]
    assert isinstance(adam_state, optim.AdamState)
    assert_count(adam_state.step, 20)
    for k in SHAPES:
        assert p[k].shape == SHAPES[k] and p[k].dtype == np.float64
        np.testing.assert_allclose(p[k].numpy(), ref_p[k], rtol=1e-12, atol=0)
        np.testing.assert_allclose(adam_state.m[k].numpy(), ref_m[k], rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(adam_state.v[k].numpy(), ref_v[k], rtol=1e-12, atol=1e-300)


def test_adam_first_step_moves_every_weight_by_lr() -> None:
    # At step 1, m_hat = g and v_hat = g**2, so each weight moves by lr * sign(g) (up to eps).
    params = {"w": tg.tensor(np.array([1.0, -2.0, 0.5]))}
    opt = optim.adam(lr=0.1, eps=1e-12)
    new, _ = opt.update({"w": tg.tensor(np.array([3.0, -0.25, 0.5]))}, opt.init(params), params)
    np.testing.assert_allclose(new["w"].numpy(), [0.9, -1.9, 0.4], rtol=1e-11)


def test_adam_state_records() -> None:
    params = {"w": tg.tensor([1.0, 2.0])}
    state = optim.adam(0.1).init(params)
    adam_state, scale_state = state
    assert isinstance(adam_state, optim.AdamState) and isinstance(scale_state, optim.ScaleState)
    assert_count(adam_state.step, 0)
    assert adam_state.m["w"].numpy().tolist() == [0.0, 0.0]
    assert adam_state.v["w"].numpy().tolist() == [0.0, 0.0]
    assert_count(scale_state.count, 0)


@pytest.mark.parametrize("make", [lambda: optim.adam(0.1), lambda: optim.sgd(0.1, momentum=0.9)],
                         ids=["adam", "sgd-momentum"])
def test_step_counts_are_0d_int64_tensors_that_increment(make: Callable[[], optim.Optimizer]) -> None:
    opt = make()
    params = random_tree(70, np.float32)
    state = opt.init(params)
    states = [state]
    for i in range(3):
        params, state = opt.update(random_tree(71 + i, np.float32), state, params)
        states.append(state)
    for n, s in enumerate(states):
        assert counts(s), s
        for c in counts(s):
            assert_count(c, n)  # each state keeps its own count: no step wrote an older one


def test_a_count_that_is_not_a_tensor_is_refused() -> None:
    params = {"w": tg.tensor([1.0])}
    opt = optim.adam(0.1)
    adam_state, scale_state = opt.init(params)
    with pytest.raises(TypeError) as info:
        opt.update(params, (attrs.evolve(adam_state, step=3), scale_state), params)
    assert str(info.value) == (
        "`adam`: the step count (state.step) must be a Tensor made by init(), got int"
    )
    with pytest.raises(TypeError) as info:
        opt.update(params, (adam_state, optim.ScaleState(3)), params)  # type: ignore[arg-type]
    assert str(info.value) == (
        "`scale_by_learning_rate`: the step count (state.count) must be a Tensor made by init(), "
        "got int"
    )


def test_adam_is_a_chain_of_scale_by_adam_and_learning_rate() -> None:
    params, grads = random_tree(1), random_tree(2)
    direct = optim.adam(0.01)
    composed = optim.Optimizer(optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(0.01)))
    a, _ = direct.update(grads, direct.init(params), params)
    b, _ = composed.update(grads, composed.init(params), params)
    for k in SHAPES:
        assert a[k].numpy().tobytes() == b[k].numpy().tobytes()


def old_cosine_rate(init_value: float, decay_steps: int, count: int) -> float:
    """`cosine_decay_schedule` as it was written with `math`, on Python numbers."""
    progress = min(count, decay_steps) / decay_steps
    return init_value * 0.5 * (1 + math.cos(math.pi * progress))


def adam_arrays_reference(
    params: dict[str, Array],
    grads: list[dict[str, Array]],
    rate: Callable[[int], float],
    b1: float,
    b2: float,
    eps: float,
) -> dict[str, Array]:
    """Adam with Python-float bias corrections, in each leaf's own dtype.

    The operations, and their order, are those `_adam_arrays` had when the step
    count was a Python int: NumPy rounds each Python float once to the array's
    dtype, so a float32 step never touches float64. The optimizer must keep
    giving exactly these bits now that its count is an array. Leaves are
    flattened, as the optimizer flattens them, so that a 0-d leaf stays an
    array (NumPy gives a scalar for ``g * g`` on 0-d arrays, which ``out=`` refuses).
    """
    p = {k: x.reshape(-1) for k, x in params.items()}
    m = {k: np.zeros_like(x) for k, x in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for step, g_tree in enumerate(grads, start=1):
        g = {k: x.reshape(-1) for k, x in g_tree.items()}
        for k in p:
            m2 = g[k] - m[k]
            m2 *= 1.0 - b1
            m2 += m[k]
            v2 = g[k] * g[k]
            v2 -= v[k]
            v2 *= 1.0 - b2
            v2 += v[k]
            direction = v2 * (1.0 / (1.0 - b2**step))
            np.sqrt(direction, out=direction)
            direction += eps
            np.divide(m2, direction, out=direction)
            direction *= 1.0 / (1.0 - b1**step)
            p[k] = p[k] + direction * -float(rate(step - 1))
            m[k], v[k] = m2, v2
    return {k: x.reshape(params[k].shape) for k, x in p.items()}


BITWISE_CASES: dict[str, tuple[dict[str, Any], Any, Callable[[int], float]]] = {
    # One dtype: the flat path, all leaves in one buffer.
    "float32": ({}, 1e-3, lambda count: 1e-3),
    # Mixed dtypes: the leaf-by-leaf path.
    "mixed": ({"b": np.float64}, 1e-3, lambda count: 1e-3),
    "cosine": (
        {},
        optim.cosine_decay_schedule(0.05, 17),
        lambda count: old_cosine_rate(0.05, 17, count),
    ),
}


@pytest.mark.parametrize(("dtypes", "lr", "rate"), BITWISE_CASES.values(), ids=BITWISE_CASES.keys())
def test_adam_float32_is_bitwise_the_python_float_formula(
    dtypes: dict[str, Any], lr: Any, rate: Callable[[int], float]
) -> None:
    def tree(seed: int) -> dict[str, Tensor]:
        t = random_tree(seed, np.float32)
        return {k: tg.tensor(x.numpy().astype(dtypes.get(k, np.float32))) for k, x in t.items()}

    params = tree(60)
    grad_trees = [tree(61 + i) for i in range(25)]
    opt = optim.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    state = opt.init(params)
    p = params
    for g in grad_trees:
        p, state = opt.update(g, state, p)
    ref = adam_arrays_reference(
        {k: t.numpy() for k, t in params.items()},
        [{k: t.numpy() for k, t in g.items()} for g in grad_trees],
        rate, 0.9, 0.999, 1e-8,
    )
    for k in SHAPES:
        assert ref[k].dtype == np.dtype(dtypes.get(k, np.float32))
        assert p[k].dtype == ref[k].dtype
        assert np.array_equal(p[k].numpy(), ref[k]), k


# ---- float32 stays float32 ---------------------------------------------------------------


OPTIMIZERS: dict[str, Callable[[], optim.Optimizer]] = {
    "adam": lambda: optim.adam(1e-3),
    "adam-cosine": lambda: optim.adam(optim.cosine_decay_schedule(1e-3, 10)),
    "adam-warmup-cosine": lambda: optim.adam(optim.warmup_cosine_decay_schedule(0.0, 1e-3, 2, 10)),
    "sgd": lambda: optim.sgd(0.1),
    "sgd-momentum": lambda: optim.sgd(0.1, momentum=0.9),
    "sgd-nesterov": lambda: optim.sgd(0.1, momentum=0.9, nesterov=True),
    "sgd-constant": lambda: optim.sgd(optim.constant_schedule(0.1)),
    "sgd-cosine": lambda: optim.sgd(optim.cosine_decay_schedule(0.1, 10)),
    "sgd-warmup-cosine": lambda: optim.sgd(optim.warmup_cosine_decay_schedule(0.0, 0.1, 2, 10), 0.9),
    # User schedules whose rates are strongly typed float64 under NEP 50.
    "sgd-float64-scalar": lambda: optim.sgd(lambda count: np.float64(0.1) / (count + 1)),
    "sgd-float64-0d-array": lambda: optim.sgd(lambda count: np.array(0.1) * np.ones_like(count)),
}


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_float32_params_and_state_stay_float32(make: Callable[[], optim.Optimizer]) -> None:
    opt = make()
    params = random_tree(3, np.float32)
    state = opt.init(params)
    for i in range(5):
        params, state = opt.update(random_tree(10 + i, np.float32), state, params)
    for leaf in arrays(params) + float_arrays(state):
        assert leaf.dtype == np.float32
    for c in counts(state):
        assert_count(c, 5)


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_float64_params_stay_float64(make: Callable[[], optim.Optimizer]) -> None:
    opt = make()
    params = random_tree(3)
    state = opt.init(params)
    params, state = opt.update(random_tree(4), state, params)
    assert {leaf.dtype for leaf in arrays(params) + float_arrays(state)} == {np.dtype(np.float64)}


# ---- purity --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_update_never_mutates_its_inputs_or_aliases_them(make: Callable[[], optim.Optimizer]) -> None:
    opt = make()
    params = random_tree(5)
    state = opt.init(params)
    # Step twice first, so the state holds non-zero moments made by the optimizer itself.
    for i in range(2):
        params, state = opt.update(random_tree(20 + i), state, params)
    grads = random_tree(30)
    inputs = arrays(grads) + arrays(state) + arrays(params)
    before = [a.copy() for a in inputs]
    new_params, new_state = opt.update(grads, state, params)
    for a, b in zip(inputs, before):
        assert a.tobytes() == b.tobytes()
    for out in arrays(new_params) + arrays(new_state):
        for a in inputs:
            assert not np.shares_memory(out, a)
    # The old state still gives the same step: nothing in it was consumed.
    again, _ = opt.update(grads, state, params)
    for x, y in zip(arrays(again), arrays(new_params)):
        assert x.tobytes() == y.tobytes()


def test_returned_params_are_not_written_by_later_steps() -> None:
    opt = optim.adam(0.1)
    params = random_tree(6)
    state = opt.init(params)
    first, state = opt.update(random_tree(7), state, params)
    snapshot = [a.copy() for a in arrays(first)]
    second, state = opt.update(random_tree(8), state, first)
    _ = opt.update(random_tree(9), state, second)
    for a, b in zip(arrays(first), snapshot):
        assert a.tobytes() == b.tobytes()


# ---- SGD -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.9, True), (0.5, True)])
def test_sgd_matches_hand_formula_and_torch(momentum: float, nesterov: bool) -> None:
    lr = 0.05
    params = random_tree(40)
    grad_trees = [random_tree(50 + i) for i in range(6)]
    opt = optim.sgd(lr, momentum=momentum, nesterov=nesterov)
    state = opt.init(params)
    p = params
    for g in grad_trees:
        p, state = opt.update(g, state, p)

    # By hand: buf = momentum * buf + g; step = g + momentum * buf (Nesterov) or buf.
    ref = {k: t.numpy().copy() for k, t in params.items()}
    buf = {k: np.zeros(shape) for k, shape in SHAPES.items()}
    for g in grad_trees:
        for k in SHAPES:
            buf[k] = momentum * buf[k] + g[k].numpy()
            ref[k] -= lr * (g[k].numpy() + momentum * buf[k] if nesterov else buf[k])

    # PyTorch.
    tp = {k: torch.tensor(t.numpy(), requires_grad=True) for k, t in params.items()}
    topt = torch.optim.SGD(list(tp.values()), lr=lr, momentum=momentum, nesterov=nesterov)
    for g in grad_trees:
        for k in SHAPES:
            tp[k].grad = torch.tensor(g[k].numpy())
        topt.step()

    for k in SHAPES:
        np.testing.assert_allclose(p[k].numpy(), ref[k], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(p[k].numpy(), tp[k].detach().numpy(), rtol=1e-13, atol=1e-15)


def test_sgd_plain_step_is_literal() -> None:
    opt = optim.sgd(0.5)
    params = {"w": tg.tensor([1.0, 2.0])}
    new, state = opt.update({"w": tg.tensor([0.5, -1.0])}, opt.init(params), params)
    assert new["w"].numpy().tolist() == [0.75, 2.5]
    (scale_state,) = state
    assert isinstance(scale_state, optim.ScaleState)
    assert_count(scale_state.count, 1)


def test_sgd_follows_a_schedule_from_step_zero() -> None:
    rates = [0.5, 0.25, 0.125]
    opt = optim.sgd(lambda count: rates[count])
    p = {"w": tg.tensor([0.0])}
    state = opt.init(p)
    seen = []
    for _ in rates:
        p, state = opt.update({"w": tg.tensor([1.0])}, state, p)
        seen.append(p["w"].item())
    assert seen == [-0.5, -0.75, -0.875]


def test_a_schedule_gets_the_count_as_a_0d_int_array_and_may_return_a_tensor() -> None:
    seen: list[Any] = []

    def schedule(count: Any) -> Any:
        seen.append(count)
        return tg.tensor(0.5) * (count + 1)  # a schedule written with tapegrad's own ops

    opt = optim.sgd(schedule)
    p = {"w": tg.tensor([0.0])}
    state = opt.init(p)
    for _ in range(2):
        p, state = opt.update({"w": tg.tensor([1.0])}, state, p)
    assert [(type(c), c.shape, c.dtype, int(c)) for c in seen] == [
        (np.ndarray, (), np.dtype(np.int64), 0),
        (np.ndarray, (), np.dtype(np.int64), 1),
    ]
    assert p["w"].numpy().tolist() == [-1.5] and p["w"].dtype == np.float32


def test_a_schedule_returning_something_else_is_refused() -> None:
    opt = optim.sgd(lambda count: fractions.Fraction(1, 10))  # type: ignore[arg-type, return-value]
    p = {"w": tg.tensor([0.0])}
    with pytest.raises(TypeError) as info:
        opt.update(p, opt.init(p), p)
    assert str(info.value) == (
        "`scale_by_learning_rate`: a schedule must return a Python number, a NumPy scalar, "
        "a 0-d array or a 0-d Tensor, got Fraction"
    )


def test_momentum_trace_state() -> None:
    opt = optim.sgd(1.0, momentum=0.5)
    p = {"w": tg.tensor([0.0])}
    state = opt.init(p)
    for _ in range(3):
        p, state = opt.update({"w": tg.tensor([1.0])}, state, p)
    trace_state = state[0]
    assert isinstance(trace_state, optim.TraceState)
    assert trace_state.trace["w"].numpy().tolist() == [1.75]  # 1, 1.5, 1.75
    assert p["w"].numpy().tolist() == [-4.25]


# ---- schedules -------------------------------------------------------------------------------


def test_constant_schedule() -> None:
    s = optim.constant_schedule(0.3)
    assert [s(0), s(1), s(1000)] == [0.3, 0.3, 0.3]


def test_cosine_decay_schedule_literal_values() -> None:
    s = optim.cosine_decay_schedule(1.0, 10)
    assert [s(0), s(5), s(10), s(20)] == [1.0, 0.5, 0.0, 0.0]
    assert s(2) == pytest.approx(0.9045084971874737, rel=1e-15)
    with_floor = optim.cosine_decay_schedule(2.0, 4, alpha=0.1)
    assert [with_floor(0), with_floor(2), with_floor(4), with_floor(9)] == pytest.approx(
        [2.0, 1.1, 0.2, 0.2], rel=1e-15
    )


def test_warmup_cosine_decay_schedule_literal_values() -> None:
    s = optim.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=4, decay_steps=12, end_value=0.1)
    values = [s(0), s(1), s(2), s(4), s(8), s(12), s(50)]
    assert values == pytest.approx([0.0, 0.25, 0.5, 1.0, 0.55, 0.1, 0.1], rel=1e-15, abs=1e-16)
    assert s(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-15)


SCHEDULES: dict[str, Callable[[Any], Any]] = {
    "constant": optim.constant_schedule(0.3),
    "cosine": optim.cosine_decay_schedule(1.0, 10),
    "cosine-alpha": optim.cosine_decay_schedule(2.0, 7, alpha=0.1),
    "warmup-cosine": optim.warmup_cosine_decay_schedule(0.0, 1.0, 4, 12, end_value=0.1),
    "no-warmup-cosine": optim.warmup_cosine_decay_schedule(0.5, 1.0, 0, 9),
}


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_schedules_give_the_same_rate_for_an_int_and_a_0d_array(schedule: Callable[[Any], Any]) -> None:
    for n in range(30):
        expected = schedule(n)
        for as_array in (np.array(n, dtype=np.int64), np.array(n, dtype=np.int32)):
            rate = schedule(as_array)
            assert np.shape(rate) == ()
            assert float(rate) == float(expected), n


def test_builtin_schedules_match_their_math_formulas() -> None:
    # As they were written with `math` on Python ints, before counts became arrays.
    cosine = optim.cosine_decay_schedule(0.05, 17)
    for n in range(40):
        assert float(cosine(n)) == pytest.approx(old_cosine_rate(0.05, 17, n), rel=1e-15, abs=1e-18)
    warm = optim.warmup_cosine_decay_schedule(0.1, 1.0, warmup_steps=5, decay_steps=20, end_value=0.2)
    for n in range(40):
        if n < 5:
            old = 0.1 + 0.9 * n / 5
        else:
            progress = min(n - 5, 15) / 15
            old = 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * progress))
        assert float(warm(n)) == pytest.approx(old, rel=1e-15, abs=1e-18)


def test_schedule_errors() -> None:
    with pytest.raises(ValueError) as info:
        optim.cosine_decay_schedule(1.0, 0)
    assert str(info.value) == "cosine_decay_schedule: decay_steps must be positive, got 0"
    with pytest.raises(ValueError) as info:
        optim.warmup_cosine_decay_schedule(0.0, 1.0, 10, 10)
    assert str(info.value) == (
        "warmup_cosine_decay_schedule: need 0 <= warmup_steps < decay_steps, got 10 and 10"
    )


# ---- bad hyperparameters and mismatched state ---------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: optim.adam(lr=0), "`adam`: lr must be a positive number or a schedule, got 0"),
        (
            lambda: optim.adam(lr=-1e-3),
            "`adam`: lr must be a positive number or a schedule, got -0.001",
        ),
        (lambda: optim.adam(lr=True), "`adam`: lr must be a positive number or a schedule, got True"),
        (lambda: optim.adam(b1=1.0), "`adam`: b1 must be in [0, 1), got 1.0"),
        (lambda: optim.adam(b1=-0.1), "`adam`: b1 must be in [0, 1), got -0.1"),
        (lambda: optim.adam(b2=1.5), "`adam`: b2 must be in [0, 1), got 1.5"),
        (lambda: optim.adam(eps=0.0), "`adam`: eps must be a positive number, got 0.0"),
        (lambda: optim.sgd(0.0), "`sgd`: lr must be a positive number or a schedule, got 0.0"),
        (lambda: optim.sgd(-1), "`sgd`: lr must be a positive number or a schedule, got -1"),
        (lambda: optim.sgd(0.1, momentum=1.0), "`sgd`: momentum must be in [0, 1), got 1.0"),
        (lambda: optim.scale_by_adam(b1=1.0), "`scale_by_adam`: b1 must be in [0, 1), got 1.0"),
        (lambda: optim.trace(momentum=1.0), "`trace`: momentum must be in [0, 1), got 1.0"),
    ],
    ids=["adam-lr-0", "adam-lr-neg", "adam-lr-bool", "b1-1", "b1-neg", "b2", "eps", "sgd-lr-0", "sgd-lr-neg",
         "momentum", "scale_by_adam-b1", "trace-momentum"],
)
def test_bad_hyperparameters(make: Callable[[], optim.Optimizer], message: str) -> None:
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


MISMATCH_HINT = "; was the optimizer state made by init() for these parameters?"


def assert_structure_error(message: str, prefix: str) -> None:
    """``prefix``, then where and how the trees differ (`tapegrad.tree`'s words, pinned in
    test_tree.py), then the hint."""
    assert message.startswith(prefix), message
    assert message.endswith(MISMATCH_HINT), message


def test_state_for_other_params_is_refused() -> None:
    opt = optim.adam(0.1)
    params = {"w": tg.tensor([1.0, 2.0]), "b": tg.tensor([0.0])}
    other_state = opt.init({"w": tg.tensor([1.0, 2.0])})
    with pytest.raises(ValueError) as info:
        opt.update(params, other_state, params)
    assert_structure_error(
        str(info.value),
        "`adam`: the first moments (state.m) do not match the structure of the parameters at <root>: ",
    )


def test_grads_of_another_structure_are_refused() -> None:
    opt = optim.sgd(0.1, momentum=0.9)
    params = [tg.tensor([1.0, 2.0]), tg.tensor([0.0])]
    with pytest.raises(ValueError) as info:
        opt.update([tg.tensor([1.0, 2.0])], opt.init(params), params)
    assert_structure_error(
        str(info.value), "`sgd`: the momentum buffers do not match the structure of the parameters at <root>: "
    )
    with pytest.raises(ValueError) as info:
        optim.sgd(0.1).update([tg.tensor([1.0, 2.0])], optim.sgd(0.1).init(params), params)
    assert_structure_error(
        str(info.value), "`apply_updates`: the updates do not match the structure of the parameters at <root>: "
    )


def test_mismatched_keys_are_named_in_the_error() -> None:
    # Same number of leaves, different keys: the message must say which key differs.
    opt = optim.adam(0.1)
    params = {"w": tg.tensor([1.0]), "b": tg.tensor([0.0])}
    grads = {"w": tg.tensor([1.0]), "c": tg.tensor([0.0])}
    with pytest.raises(ValueError) as info:
        opt.update(grads, opt.init(params), params)
    assert "'b'" in str(info.value) and "'c'" in str(info.value), str(info.value)
    assert_structure_error(
        str(info.value), "`adam`: the first moments (state.m) do not match the structure of the parameters at "
    )


def test_state_of_another_shape_is_refused_not_broadcast() -> None:
    opt = optim.adam(0.1)
    params = {"w": tg.tensor([1.0, 2.0, 3.0])}
    state = opt.init({"w": tg.tensor([1.0])})
    with pytest.raises(ValueError) as info:
        opt.update(params, state, params)
    assert str(info.value) == (
        "`adam`: the first moments (state.m) at ['w'] have shape (1,), but the gradients there have "
        "shape (3,); was the optimizer state made by init() for these parameters?"
    )


def test_gradients_of_another_shape_are_refused_not_broadcast() -> None:
    opt = optim.sgd(0.1)
    params = {"w": tg.tensor([1.0])}
    with pytest.raises(ValueError) as info:
        opt.update({"w": tg.tensor([1.0, 2.0, 3.0])}, opt.init(params), params)
    assert str(info.value) == (
        "`apply_updates`: the updates at ['w'] have shape (3,), but the parameters there have "
        "shape (1,); was the optimizer state made by init() for these parameters?"
    )


def test_state_of_another_optimizer_is_refused() -> None:
    params = {"w": tg.tensor([1.0])}
    with pytest.raises(TypeError) as info:
        optim.adam(0.1).update(params, (optim.ScaleState(count(0)), optim.ScaleState(count(0))), params)
    assert str(info.value) == "`adam`: expected an AdamState from init(), got ScaleState"
    with pytest.raises(ValueError) as info2:
        optim.adam(0.1).update(params, optim.sgd(0.1).init(params), params)
    assert str(info2.value) == "`chain`: expected a state tuple of 2 entries from init(), got tuple of 1"


def test_non_tensor_gradients_are_refused() -> None:
    params = {"w": tg.tensor([1.0])}
    opt = optim.adam(0.1)
    with pytest.raises(TypeError) as info:
        opt.update({"w": [1.0]}, opt.init(params), params)
    assert str(info.value) == "`adam`: every leaf of the gradients must be a Tensor, got float"
