"""`tapegrad.replay`: trace once per signature, then replay the recorded NumPy calls.

A replay must be indistinguishable from the eager run: the same bits in every
parameter, moment and loss of a training step, the same results for every
output structure, the same exceptions with the same messages. Signatures must
retrace when a shape, dtype, stride or static value changes; guards must fall
back to the eager function when a branch flips; what cannot replay faithfully
must be refused with a pinned `ReplayError`. The generated function must free
its intermediates and drop dead code.
"""

from __future__ import annotations

import gc
import re
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tensor, nn, optim

from _support import assert_same

Array = np.ndarray[Any, Any]
Step = Callable[[Any, Any, Tensor, Tensor], tuple[Any, Any, Tensor]]

SIZES = (784, 128, 64, 10)
BATCH = 32
STEPS = 20


# ---- helpers ------------------------------------------------------------------------------------


def exact(message: str) -> str:
    """A `pytest.raises` pattern matching exactly ``message``, start to end."""
    return "^" + re.escape(message) + "$"


def escape_message(what: str) -> str:
    """The full text of the `ReplayError` for a value leaving the trace (``_traced._escape``)."""
    return (
        f"replay: {what} inside a replayed function: the value would be frozen into the "
        "replay. Do it outside the replayed function (return the array and convert it there), "
        "or run this function without replay."
    )


OUT_MESSAGE = (
    "replay: an operation writes its result into an array that was created "
    "without the function's traced arguments (for example by np.empty(shape)), "
    "so a replay would overwrite the same memory every call; allocate it with "
    "np.empty_like(x) from a traced array instead"
)
WRITES_INPUTS_MESSAGE = (
    "replay: the function took a different branch than when it was traced, "
    "after writing into its arguments in place, so it cannot be rerun eagerly; "
    "avoid in-place writes to arguments in a replayed function"
)
TAPE_MESSAGE = (
    "replay: a replayed function was called while a Tape is recording; a replay "
    "records nothing on it, so its gradients would be lost. Call it outside the "
    "tape, or open the tape inside the replayed function."
)


def label_message(bad: int, classes: int) -> str:
    """`_check_cross_entropy_args`'s message for an out-of-range label."""
    return (
        f"`cross_entropy`: label {bad} is outside [0, {classes}) for logits with "
        f"{classes} classes"
    )


def constant_warning(shape: tuple[int, ...]) -> str:
    """`ReplayConstantWarning`'s message for a frozen array of ``shape``."""
    return (
        f"replay: the function reads an array of shape {shape} that is not one of its "
        "arguments; it is frozen into the replay as a constant. If it changes between "
        "calls, pass it as an argument instead."
    )


def fresh_arrays(tree: Any) -> Iterator[Array]:
    """The raw arrays of every Tensor or ndarray leaf."""
    for leaf in tg.tree.leaves(tree):
        if isinstance(leaf, Tensor):
            yield leaf.data
        elif isinstance(leaf, np.ndarray):
            yield leaf


def batches(n: int, batch: int = BATCH, seed: int = 7) -> list[tuple[Tensor, Tensor]]:
    """``n`` different pixel-like float32 batches and their labels."""
    rng = np.random.default_rng(seed)
    return [
        (
            tg.tensor(rng.random((batch, SIZES[0]), dtype=np.float32)),
            tg.tensor(rng.integers(0, SIZES[-1], batch)),
        )
        for _ in range(n)
    ]


DATA = batches(STEPS)


def make_step(model: nn.Sequential, opt: optim.Optimizer, reduction: nn.Reduction = "mean") -> Step:
    """The functional training step of the seed's MLP."""

    def step(params: Any, state: Any, x: Tensor, y: Tensor) -> tuple[Any, Any, Tensor]:
        with tg.Tape() as tape:
            loss = nn.cross_entropy(model.apply(params, x), y, reduction=reduction)
        grads = tape.gradient(loss, params)
        params, state = opt.update(grads, state, params)
        return params, state, loss

    return step


def make_plain_sgd_step(model: nn.Sequential, lr: float = 0.05) -> Step:
    """A training step with no step counter at all: SGD written with `tg.tree.map`."""

    def step(params: Any, state: Any, x: Tensor, y: Tensor) -> tuple[Any, Any, Tensor]:
        with tg.Tape() as tape:
            loss = nn.cross_entropy(model.apply(params, x), y)
        grads = tape.gradient(loss, params)
        return tg.tree.map(lambda p, g: p - lr * g, params, grads), state, loss

    return step


def scale_without_state(factor: float) -> optim.Transform[None]:
    """A stateless transformation (``updates * factor``), for chains with no counter."""

    def init(params: Any) -> None:
        return None

    def update(updates: Any, state: None, params: Any) -> tuple[Any, None]:
        return tg.tree.map(lambda u: u * factor, updates), None

    return optim.Transform.from_tree_update(init, update)


def run(step: Step, params: Any, state: Any, data: list[tuple[Tensor, Tensor]]) -> tuple[Any, Any, list[Tensor]]:
    """``step`` over every batch of ``data``; the final params and state, and every loss."""
    losses = []
    for x, y in data:
        params, state, loss = step(params, state, x, y)
        losses.append(loss)
    return params, state, losses


# ---- 1. a full training step replays bit for bit ------------------------------------------------

TRAINING_CASES: dict[str, tuple[Callable[[], nn.Sequential], Callable[[], optim.Optimizer], nn.Reduction]] = {
    "adam": (lambda: nn.MLP(SIZES), lambda: optim.adam(1e-3), "mean"),
    "adam-sum": (lambda: nn.MLP(SIZES), lambda: optim.adam(1e-3), "sum"),
    "adam-gelu": (lambda: nn.MLP(SIZES, activation=nn.GELU), lambda: optim.adam(1e-3), "mean"),
    "adam-float64": (lambda: nn.MLP(SIZES, dtype="float64"), lambda: optim.adam(1e-3), "mean"),
    "adam-cosine": (lambda: nn.MLP(SIZES), lambda: optim.adam(optim.cosine_decay_schedule(1e-3, 15)), "mean"),
    "sgd-nesterov": (lambda: nn.MLP(SIZES), lambda: optim.sgd(1e-2, momentum=0.9, nesterov=True), "mean"),
    "chain-adam": (
        lambda: nn.MLP(SIZES),
        lambda: optim.Optimizer(optim.chain(optim.scale_by_adam(), optim.scale_by_learning_rate(1e-3))),
        "mean",
    ),
    # No step counter anywhere in this chain: it replays whatever the counters' type.
    "chain-trace-stateless": (
        lambda: nn.MLP(SIZES),
        lambda: optim.Optimizer(optim.chain(optim.trace(0.9, nesterov=True), scale_without_state(-1e-2))),
        "mean",
    ),
}


@pytest.mark.parametrize(("model_fn", "opt_fn", "reduction"), TRAINING_CASES.values(), ids=TRAINING_CASES.keys())
def test_training_steps_replay_bitwise_equal_to_eager(
    model_fn: Callable[[], nn.Sequential], opt_fn: Callable[[], optim.Optimizer], reduction: nn.Reduction
) -> None:
    model, opt = model_fn(), opt_fn()
    step = make_step(model, opt, reduction)
    params = model.init(tg.random.key(0))
    state = opt.init(params)
    dtype = params[0].weight.dtype  # a float64 model is given float64 data: floats never mix silently
    data = [(x.astype(dtype), y) for x, y in DATA]

    eager = run(step, params, state, data)
    replayed = tg.replay(step)
    result = run(replayed, params, state, data)

    assert_same(result, eager)  # every parameter, every optimizer moment, every loss
    # The step count must be traced data, not a static Python int that retraces every step.
    # At most two signatures: the parameters (or moments) as init() made them, then as
    # views of the one buffer the optimizer returns, which a replay takes whole.
    assert replayed.traces <= 2 and replayed.eager_calls == 0
    assert replayed.replays == STEPS - replayed.traces
    assert replayed.cache_size == replayed.traces


def test_plain_sgd_step_replays_bitwise_equal_to_eager() -> None:
    model = nn.MLP(SIZES)
    step = make_plain_sgd_step(model)
    params = model.init(tg.random.key(1))
    eager = run(step, params, None, DATA)
    replayed = tg.replay(step)
    assert_same(run(replayed, params, None, DATA), eager)
    assert (replayed.traces, replayed.replays, replayed.eager_calls) == (1, STEPS - 1, 0)


# ---- 2. signatures -------------------------------------------------------------------------------


def test_new_batch_size_traces_again_and_both_signatures_keep_replaying() -> None:
    model = nn.MLP(SIZES)
    step = make_plain_sgd_step(model)
    replayed = tg.replay(step)
    params = model.init(tg.random.key(2))
    small = batches(4, batch=16, seed=11)
    big = batches(4, batch=BATCH, seed=12)
    p_eager = p_replay = params
    for (xs, ys), (xb, yb) in zip(small, big):
        for x, y in ((xb, yb), (xs, ys)):
            p_eager, _, loss_eager = step(p_eager, None, x, y)
            p_replay, _, loss_replay = replayed(p_replay, None, x, y)
            assert_same((p_replay, loss_replay), (p_eager, loss_eager))
    assert replayed.cache_size == 2
    assert (replayed.traces, replayed.replays, replayed.eager_calls) == (2, 6, 0)


def test_float64_params_trace_again() -> None:
    step = make_plain_sgd_step(nn.MLP(SIZES))
    replayed = tg.replay(step)
    p32 = nn.MLP(SIZES).init(tg.random.key(3))
    p64 = nn.MLP(SIZES, dtype="float64").init(tg.random.key(3))
    x32, y = DATA[0]
    x64 = tg.tensor(x32.numpy().astype(np.float64))
    for params, x in ((p32, x32), (p64, x64), (p32, x32), (p64, x64)):
        assert_same(replayed(params, None, x, y), step(params, None, x, y))
    assert replayed.cache_size == 2
    assert (replayed.traces, replayed.replays) == (2, 2)


def test_strides_are_part_of_the_signature() -> None:
    def f(x: Tensor) -> Tensor:
        return x * 2.0 + 1.0

    replayed = tg.replay(f)
    a = tg.tensor(np.arange(12.0).reshape(3, 4))
    b = tg.tensor(np.arange(12.0).reshape(4, 3).T)  # same shape and dtype, other strides
    for x in (a, b, a, b):
        assert_same(replayed(x), f(x))
    assert (replayed.traces, replayed.replays, replayed.cache_size) == (2, 2, 2)


def scaled(x: Tensor, scale: float) -> Tensor:
    return x * scale + 1.0


def test_a_static_python_value_is_part_of_the_signature() -> None:
    replayed = tg.replay(scaled)
    x = tg.tensor([1.0, -2.0, 3.0])
    for s in (0.5, 2.0, 0.5, 2.0):
        assert_same(replayed(x, s), scaled(x, s))
    assert (replayed.traces, replayed.replays, replayed.cache_size) == (2, 2, 2)


def test_int_float_and_bool_statics_are_different_signatures() -> None:
    replayed = tg.replay(scaled)
    x = tg.tensor([1.0, -2.0, 3.0])
    for s in (1, 1.0, True, 1, 1.0, True):
        assert_same(replayed(x, s), scaled(x, s))
    assert (replayed.traces, replayed.replays, replayed.cache_size) == (3, 3, 3)


def test_negative_zero_static_is_not_replayed_as_positive_zero() -> None:
    # 0.0 == -0.0 and they hash alike, but they are different values: x * -0.0 is -0.0.
    x = tg.tensor([1.0, 2.0])

    def times(x: Tensor, s: float) -> Tensor:
        return x * s

    replayed = tg.replay(times)
    replayed(x, 0.0)
    result = replayed(x, -0.0)
    expected = times(x, -0.0)
    assert np.signbit(expected.numpy()).all()
    assert np.array_equal(np.signbit(result.numpy()), np.signbit(expected.numpy()))


def test_kwargs_are_supported_and_part_of_the_signature() -> None:
    def affine(x: Tensor, *, scale: Tensor, shift: float = 0.0) -> Tensor:
        return x * scale + shift

    replayed = tg.replay(affine)
    x = tg.tensor([1.0, 2.0, 3.0])
    s1, s2 = tg.tensor([2.0, 3.0, 4.0]), tg.tensor([-1.0, 0.5, 7.0])
    assert_same(replayed(x, scale=s1, shift=1.0), affine(x, scale=s1, shift=1.0))  # traced
    assert_same(replayed(x, scale=s2, shift=1.0), affine(x, scale=s2, shift=1.0))  # replayed
    assert_same(replayed(x, shift=1.0, scale=s1), affine(x, scale=s1, shift=1.0))  # order is no matter
    assert (replayed.traces, replayed.replays) == (1, 2)
    assert_same(replayed(x, scale=s2, shift=2.0), affine(x, scale=s2, shift=2.0))  # a new static
    assert_same(replayed(x, scale=s2), affine(x, scale=s2))  # a kwarg left out: another structure
    assert_same(replayed(x, scale=s1), affine(x, scale=s1))
    assert (replayed.traces, replayed.replays, replayed.cache_size) == (3, 3, 3)


def test_positional_and_keyword_calls_are_different_signatures() -> None:
    def f(x: Tensor, y: Tensor) -> Tensor:
        return x - y

    replayed = tg.replay(f)
    x, y = tg.tensor([1.0, 2.0]), tg.tensor([0.5, 4.0])
    assert_same(replayed(x, y), f(x, y))
    assert_same(replayed(x, y=y), f(x, y))
    assert_same(replayed(y, y=x), f(y, x))
    assert (replayed.traces, replayed.replays, replayed.cache_size) == (2, 1, 2)


def test_clear_forgets_every_recording() -> None:
    replayed = tg.replay(scaled)
    x = tg.tensor([1.0, 2.0])
    replayed(x, 2.0)
    replayed(x, 2.0)
    replayed.clear()
    assert replayed.cache_size == 0 and replayed.sources() == []
    assert_same(replayed(x, 2.0), scaled(x, 2.0))
    assert (replayed.traces, replayed.replays, replayed.cache_size) == (2, 1, 1)


def test_the_same_tensor_passed_twice_keeps_its_identity() -> None:
    # Tied weights: one Tensor at two leaves. The tape keys gradients by tensor, so
    # eagerly each leaf's gradient is the total over both uses.
    def grads(params: dict[str, Tensor], x: Tensor) -> dict[str, Tensor]:
        with tg.Tape() as tape:
            loss = ((x @ params["enc"]) @ params["dec"]).sum()
        return tape.gradient(loss, params)

    w = tg.tensor([[1.0, 2.0], [-1.0, 0.5]])
    x = tg.tensor([[0.5, -1.5], [2.0, 1.0]])
    tied = {"enc": w, "dec": w}
    replayed = tg.replay(grads)
    assert_same(replayed(tied, x), grads(tied, x))  # traced
    w2 = tg.tensor([[0.0, -2.0], [3.0, 1.0]])
    tied2 = {"enc": w2, "dec": w2}
    assert_same(replayed(tied2, x), grads(tied2, x))  # replayed, or traced again


# ---- 3. guards --------------------------------------------------------------------------------


def branchy(x: Tensor) -> Tensor:
    if (x > 0).data.all():
        return x * 2.0
    return x * 3.0


def test_a_flipped_branch_runs_eagerly_and_the_trace_keeps_replaying() -> None:
    replayed = tg.replay(branchy)
    positive, mixed = tg.tensor([1.0, 2.0, 3.0]), tg.tensor([1.0, -2.0, 3.0])
    assert_same(replayed(positive), branchy(positive))
    assert_same(replayed(mixed), branchy(mixed))
    assert (replayed.traces, replayed.replays, replayed.eager_calls) == (1, 0, 1)
    assert_same(replayed(positive * 5.0), branchy(positive * 5.0))
    assert (replayed.traces, replayed.replays, replayed.eager_calls) == (1, 1, 1)


def mean_of_positives_tensor(x: Tensor) -> Tensor:
    selected = x[x > 0]  # a boolean-mask Tensor index
    return selected.sum() / selected.shape[0]


def mean_of_positives_array(x: Tensor) -> Tensor:
    selected = x.data[x.data > 0]  # a boolean-mask array index
    return Tensor(selected.sum() / selected.shape[0])


@pytest.mark.parametrize("fn", [mean_of_positives_tensor, mean_of_positives_array], ids=["tensor", "array"])
def test_a_value_shaped_result_is_guarded(fn: Callable[[Tensor], Tensor]) -> None:
    # The number of selected elements is read as a Python int (the shape): a replay
    # must not reuse the trace's count when the mask selects more.
    replayed = tg.replay(fn)
    for values in ([1.0, -2.0, 3.0], [4.0, -5.0, 6.0]):
        x = tg.tensor(values)
        assert_same(replayed(x), fn(x))
    assert (replayed.traces, replayed.replays) == (1, 1)
    x = tg.tensor([1.0, 2.0, 3.0])
    assert_same(replayed(x), fn(x))


def cross_entropy_of(logits: Tensor, labels: Tensor) -> Tensor:
    return nn.cross_entropy(logits, labels)


@pytest.mark.parametrize("bad", [10, -3])
def test_out_of_range_label_after_tracing_raises_the_eager_error(bad: int) -> None:
    replayed = tg.replay(cross_entropy_of)
    rng = np.random.default_rng(5)
    logits = tg.tensor(rng.standard_normal((4, 10)))
    good = tg.tensor([0, 9, 3, 3])
    wrong = tg.tensor([0, bad, 3, 3])
    assert_same(replayed(logits, good), cross_entropy_of(logits, good))
    with pytest.raises(ValueError, match=exact(label_message(bad, 10))):
        cross_entropy_of(logits, wrong)
    with pytest.raises(ValueError, match=exact(label_message(bad, 10))):
        replayed(logits, wrong)
    assert replayed.eager_calls == 1
    assert_same(replayed(logits, good), cross_entropy_of(logits, good))
    assert (replayed.traces, replayed.replays) == (1, 1)


def test_out_of_range_label_on_the_tracing_call_raises_the_eager_error() -> None:
    replayed = tg.replay(cross_entropy_of)
    logits = tg.tensor(np.zeros((2, 10)))
    with pytest.raises(ValueError, match=exact(label_message(12, 10))):
        replayed(logits, tg.tensor([1, 12]))


def test_replayed_cross_entropy_is_as_quiet_as_eager_on_an_all_minus_inf_row() -> None:
    # Eagerly, the all -inf row gives nan under np.errstate, with no RuntimeWarning.
    replayed = tg.replay(cross_entropy_of)
    labels = tg.tensor([0, 1])
    finite = tg.tensor([[1.0, 2.0], [0.5, -0.5]])
    minus_inf = tg.tensor([[-np.inf, -np.inf], [0.5, -0.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = cross_entropy_of(minus_inf, labels)
        replayed(finite, labels)
        result = replayed(minus_inf, labels)
    assert np.isnan(expected.numpy())
    assert_same(result, expected)


def test_a_guard_after_writing_into_an_argument_refuses_to_rerun() -> None:
    def write_then_branch(buf: Array) -> Any:
        buf[0] = 7.0
        if (buf > 0).all():
            return buf * 2.0
        return buf * 3.0

    replayed = tg.replay(write_then_branch)
    replayed(np.array([1.0, 2.0]))
    with pytest.raises(tg.ReplayError, match=exact(WRITES_INPUTS_MESSAGE)):
        replayed(np.array([1.0, -2.0]))


def test_a_guard_after_writing_into_a_view_of_an_argument_refuses_to_rerun() -> None:
    # Writing through a view writes the argument just the same: rerunning eagerly
    # after the replay's write would apply it twice.
    def write_view_then_branch(buf: Array) -> Any:
        view = buf[:1]
        view *= 2.0
        if (buf > 0).all():
            return buf * 1.0
        return buf * 3.0

    replayed = tg.replay(write_view_then_branch)
    replayed(np.array([1.0, 2.0]))
    buf = np.array([-1.0, 2.0])
    with pytest.raises(tg.ReplayError, match=exact(WRITES_INPUTS_MESSAGE)):
        replayed(buf)


# ---- 4. what cannot replay is refused -----------------------------------------------------------


def loss_of(w: Tensor, x: Tensor) -> Tensor:
    return ((x @ w) ** 2).sum()


W = tg.tensor([1.0, -1.0])
X = tg.tensor([[1.0, 2.0], [0.5, 0.25]])


def assert_refused(fn: Callable[..., Any], message: str, *args: Any) -> None:
    """``fn`` runs eagerly, but its replay raises `ReplayError` with exactly ``message``."""
    fn(*args)
    replayed = tg.replay(fn)
    with pytest.raises(tg.ReplayError, match=exact(message)):
        replayed(*args)
    assert (replayed.traces, replayed.cache_size) == (0, 0)


def test_item_inside_is_refused() -> None:
    def f(w: Tensor, x: Tensor) -> float:
        return float(loss_of(w, x).item())

    assert_refused(f, escape_message("x.item() turns the value into a Python number"), W, X)


def test_float_of_a_tensor_inside_is_refused() -> None:
    def f(w: Tensor, x: Tensor) -> float:
        return float(loss_of(w, x))

    assert_refused(f, escape_message("x.item() turns the value into a Python number"), W, X)


def test_float_of_an_array_inside_is_refused() -> None:
    def f(w: Tensor, x: Tensor) -> float:
        return float(loss_of(w, x).data)

    assert_refused(f, escape_message("float(x) of a traced value"), W, X)


def test_int_of_an_array_inside_is_refused() -> None:
    def f(w: Tensor, x: Tensor) -> int:
        return int(loss_of(w, x).data)

    assert_refused(f, escape_message("int(x) of a traced value"), W, X)


def test_np_asarray_inside_is_refused() -> None:
    def f(w: Tensor, x: Tensor) -> Array:
        return np.asarray(loss_of(w, x).data)

    # The text is pinned in test_replay_corpus.py: it also covers table[idx] and buf[idx] = x.
    from tapegrad._arrays._traced import UNOWNED_ARRAY_MESSAGE

    assert_refused(f, UNOWNED_ARRAY_MESSAGE, W, X)


def test_calling_inside_an_outer_tape_is_refused() -> None:
    replayed = tg.replay(loss_of)
    replayed(W, X)
    with tg.Tape():
        with pytest.raises(tg.ReplayError, match=exact(TAPE_MESSAGE)):
            replayed(W, X)
    assert (replayed.traces, replayed.replays) == (1, 0)


class Unhashable:
    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("leaf", [{1, 2}, Unhashable()], ids=["set", "custom"])
def test_an_unhashable_static_argument_is_refused(leaf: Any) -> None:
    replayed = tg.replay(lambda w, setting: w * 2.0)
    name = type(leaf).__name__
    with pytest.raises(
        tg.ReplayError,
        match=exact(
            f"replay: an argument leaf of type {name} is neither an array nor "
            "hashable, so it cannot be part of the replay's signature; pass arrays as Tensors "
            "and other settings as hashable values"
        ),
    ):
        replayed(W, leaf)


def test_writing_into_an_untraced_buffer_through_out_is_refused() -> None:
    def f(t: Tensor) -> Tensor:
        buf = np.empty(t.shape)
        np.add(t.data, 1, out=buf)
        return Tensor(buf)

    assert_refused(f, OUT_MESSAGE, tg.tensor(np.arange(3.0)))


def test_writing_into_an_untraced_buffer_through_a_positional_out_is_refused_or_right() -> None:
    # `out` given positionally to a NumPy function, not a ufunc: the write must not
    # be frozen (nor dropped as dead code) with the buffer returned as a constant.
    def column_sums(t: Tensor) -> Tensor:
        buf = np.empty(t.shape[1])
        np.sum(t.data, 0, None, buf)
        return Tensor(buf)

    replayed = tg.replay(column_sums)
    first = tg.tensor(np.arange(6.0).reshape(3, 2))
    try:
        replayed(first)
    except tg.ReplayError as error:
        assert str(error) == OUT_MESSAGE
        return
    second = tg.tensor(np.arange(6.0).reshape(3, 2) * 10.0)
    assert_same(replayed(second), column_sums(second))


# ---- 5. constants closed over -------------------------------------------------------------------


def test_closing_over_a_large_tensor_warns() -> None:
    big = tg.tensor(np.ones((64, 64)))  # 4096 elements: the threshold

    def f(x: Tensor) -> Tensor:
        return x @ big

    replayed = tg.replay(f)
    x = tg.tensor(np.ones((2, 64)))
    with pytest.warns(tg.ReplayConstantWarning, match=exact(constant_warning((64, 64)))):
        replayed(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(replayed(x), f(x))  # the replay itself does not warn again


def test_closing_over_a_small_tensor_does_not_warn() -> None:
    small = tg.tensor(np.ones((63, 65)))  # 4095 elements

    def f(x: Tensor) -> Tensor:
        return x @ small

    replayed = tg.replay(f)
    x = tg.tensor(np.ones((2, 63)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        replayed(x)
        assert_same(replayed(x), f(x))


# ---- 6. outputs ---------------------------------------------------------------------------------


def nested(x: Tensor, y: Tensor) -> dict[str, Any]:
    return {
        "sum": x + y,
        "pair": (x * y, None),
        "count": 3,
        "name": "nested",
        "same": x,
        "const": tg.tensor([1.0, 2.0]),
        "deep": [{"exp": tg.exp(x), "raw": y.data - 1.0}, (tg.tensor(7),)],
    }


def test_nested_outputs_have_the_eager_structure_and_values() -> None:
    replayed = tg.replay(nested)
    rng = np.random.default_rng(8)
    for _ in range(3):
        x, y = tg.tensor(rng.standard_normal(4)), tg.tensor(rng.standard_normal(4))
        result, expected = replayed(x, y), nested(x, y)
        assert_same(result, expected)
        assert result["same"].data is x.data  # an input passed through is the input
    assert (replayed.traces, replayed.replays) == (1, 2)


def test_consecutive_replays_return_fresh_arrays() -> None:
    def fresh(x: Tensor, y: Tensor) -> dict[str, Any]:
        return {"sum": x + y, "pair": (x * y, tg.exp(x)), "raw": y.data - 1.0, "loss": (x * y).sum()}

    replayed = tg.replay(fresh)
    x, y = tg.tensor([1.0, 2.0, 3.0]), tg.tensor([0.5, -1.0, 2.0])
    replayed(x, y)
    first, second = replayed(x, y), replayed(x, y)
    assert replayed.replays == 2
    pairs = list(zip(fresh_arrays(first), fresh_arrays(second)))
    assert len(pairs) == 5
    for a, b in pairs:
        assert a is not b and not np.shares_memory(a, b)


def test_a_constant_array_output_is_not_shared_between_calls() -> None:
    # Eagerly, each call makes a new buffer that the caller owns and may write. A
    # replay must hand out a fresh one too, or refuse the function; never the same one.
    def with_buffer(x: Tensor) -> tuple[Tensor, Array]:
        return x * 2.0, np.zeros(3)

    replayed = tg.replay(with_buffer)
    x = tg.tensor([1.0, 2.0])
    try:
        _, buf = replayed(x)
    except tg.ReplayError:
        return
    buf += 5.0  # the caller's own array
    _, again = replayed(x)
    assert np.array_equal(again, np.zeros(3))
    assert not np.shares_memory(buf, again)


# ---- 7. higher order ----------------------------------------------------------------------------


def test_gradient_of_a_gradient_replays_equal_to_eager() -> None:
    def second_order(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with tg.Tape() as outer:
            with tg.Tape() as inner:
                y = (tg.tanh(x) * x**3).sum()
            g = inner.gradient(y, x)
            z = (g * g).sum()
        return outer.gradient(z, x), g, y

    replayed = tg.replay(second_order)
    rng = np.random.default_rng(9)
    for _ in range(4):
        x = tg.tensor(rng.standard_normal(5))
        assert_same(replayed(x), second_order(x))
    assert (replayed.traces, replayed.replays) == (1, 3)


# ---- 8. memory ------------------------------------------------------------------------------------

MEMORY_CASES: dict[str, Callable[[nn.Sequential], tuple[Step, Callable[[Any], Any]]]] = {
    "plain-sgd": lambda model: (make_plain_sgd_step(model), lambda params: None),
    "adam": lambda model: (make_step(model, optim.adam(1e-3)), optim.adam(1e-3).init),
}


@pytest.mark.parametrize("case", MEMORY_CASES.values(), ids=MEMORY_CASES.keys())
def test_replayed_steps_do_not_keep_memory_alive(
    case: Callable[[nn.Sequential], tuple[Step, Callable[[Any], Any]]],
) -> None:
    model = nn.MLP(SIZES)
    step, init = case(model)
    replayed = tg.replay(step)
    params = model.init(tg.random.key(4))
    state = init(params)
    data = DATA[:5]
    tracemalloc.start()
    try:
        for i in range(50):
            x, y = data[i % len(data)]
            params, state, loss = replayed(params, state, x, y)
            if i == 4:
                gc.collect()
                after_5 = tracemalloc.get_traced_memory()[0]
        gc.collect()
        after_50 = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # One step's parameters alone are ~436 kB; a leak of anything per step shows over 45 steps.
    assert after_50 - after_5 < 200_000, (after_5, after_50)
    assert replayed.traces <= 2  # as init() made the state, then as the optimizer returns it


# ---- 9. the generated source ------------------------------------------------------------------


def test_the_source_of_a_training_step_has_no_tape_and_frees_intermediates() -> None:
    model = nn.MLP(SIZES)
    replayed = tg.replay(make_plain_sgd_step(model))
    params = model.init(tg.random.key(5))
    x, y = DATA[0]
    replayed(params, None, x, y)
    (source,) = replayed.sources()
    assert "Tape" not in source and "tape" not in source
    header, *body = source.splitlines()
    inputs = set(re.findall(r"v\d+", header))
    deleted = {name for line in body if line.strip().startswith("del ") for name in re.findall(r"v\d+", line)}
    assert deleted - inputs, "no intermediate is ever deleted"
    assert body[-1].strip().startswith("return")


def test_dead_code_is_dropped() -> None:
    def dead(x: Tensor) -> Tensor:
        _ = x * 5.0
        _ = tg.exp(x).sum()
        return x + 1.0

    def live(x: Tensor) -> Tensor:
        return x + 1.0

    def both(x: Tensor) -> Tensor:
        return x * 5.0 + 1.0

    x = tg.tensor([1.0, 2.0])
    sources = {}
    for fn in (dead, live, both):
        replayed = tg.replay(fn)
        assert_same(replayed(x), fn(x))
        (sources[fn.__name__],) = replayed.sources()
    calls = {name: len(re.findall(r"= c\d+\(", src)) for name, src in sources.items()}
    assert calls == {"dead": 1, "live": 1, "both": 2}
    assert normalized(sources["dead"]) == normalized(sources["live"])


def normalized(source: str) -> str:
    """``source`` with its function name and slot numbers renamed in order of appearance."""
    names: dict[str, str] = {}

    def rename(match: re.Match[str]) -> str:
        return names.setdefault(match.group(), f"v{len(names)}")

    return re.sub(r"\bv\d+\b", rename, re.sub(r"^def \w+\(", "def f(", source))


# ---- CuPy tensors run eagerly -------------------------------------------------------------------


@pytest.mark.gpu
def test_cupy_tensors_run_eagerly() -> None:
    def f(x: Tensor) -> Tensor:
        return (x * 2.0 + 1.0).sum()

    replayed = tg.replay(f)
    x = tg.tensor([1.0, 2.0, 3.0], device="cuda")
    for _ in range(2):
        result = replayed(x)
        assert result.device == "cuda"
        assert_same(result.to("cpu"), f(x).to("cpu"))
    assert (replayed.traces, replayed.replays, replayed.eager_calls, replayed.cache_size) == (0, 0, 2, 0)


# ---- 10. buffer reuse ------------------------------------------------------------------------------


def test_a_dead_buffer_is_reused_and_values_stay_exact() -> None:
    def chain(x: Tensor) -> Tensor:
        return ((x * 2.0 + 1.0) * 3.0 - 4.0) / 5.0

    replayed = tg.replay(chain)
    for seed in range(3):
        x = tg.tensor(np.random.default_rng(seed).standard_normal((64, 64)).astype(np.float32))
        assert_same(replayed(x), chain(x))
    # Each op after the first writes over the buffer of the one before it, which just died.
    assert replayed.sources()[0].count("out=") == 4


def test_a_buffer_read_later_through_a_view_is_not_reused() -> None:
    def with_view(x: Tensor) -> tuple[Tensor, Tensor]:
        a = x * 2.0
        head = a[:2]  # a view of a's memory, read after a's own last use
        b = a + 1.0
        c = b * 3.0
        return c, head * 5.0

    replayed = tg.replay(with_view)
    for seed in range(3):
        x = tg.tensor(np.random.default_rng(seed).standard_normal((4, 8)).astype(np.float32))
        assert_same(replayed(x), with_view(x))


def test_an_output_is_never_written_over() -> None:
    def two_outputs(x: Tensor) -> tuple[Tensor, Tensor]:
        a = x * 2.0
        b = (a + 1.0) * 3.0
        return a, b

    replayed = tg.replay(two_outputs)
    results = []
    for seed in range(3):
        x = tg.tensor(np.random.default_rng(seed).standard_normal((8, 8)).astype(np.float32))
        results.append((replayed(x), x))
        assert_same(results[-1][0], two_outputs(x))
    for (a, b), x in results:  # earlier results are untouched by later calls
        assert_same((a, b), two_outputs(x))


def test_gradients_are_computed_straight_into_the_optimizers_flat_buffer() -> None:
    model = nn.MLP(SIZES)
    opt = optim.adam(1e-3)
    step = tg.replay(make_step(model, opt))
    params = model.init(tg.random.key(5))
    state = opt.init(params)
    for x, y in DATA[:3]:
        params, state, _ = step(params, state, x, y)
    source = step.sources()[-1]
    # Once the parameters arrive as one buffer, nothing is concatenated: each weight and
    # bias gradient is written into its place in the flat gradient (a matmul or a sum
    # with out=), as a fused optimizer would.
    last = list(step._cache.values())[-1]
    called = [v for v in last.run.__globals__.values() if callable(v)]
    assert np.concatenate not in called
    assert np.empty in called
    assert source.count(".sum(axis=0, out=") == 3


def test_a_donated_buffer_that_takes_new_parameters_hands_back_its_registered_views() -> None:
    model = nn.MLP(SIZES)
    opt = optim.adam(1e-3)
    eager = make_step(model, opt)
    step = tg.replay(eager, donate_argnums=(0, 1))
    params = model.init(tg.random.key(5))
    state = opt.init(params)
    expected_params, expected_state = params, state
    for x, y in DATA[:5]:
        given = {id(leaf.data) for leaf in tg.tree.leaves((params, state))}
        params, state, loss = step(params, state, x, y)
        expected_params, expected_state, expected_loss = eager(expected_params, expected_state, x, y)
        assert_same((params, state, loss), (expected_params, expected_state, expected_loss))
    # One call makes all the views of a buffer (the parameters given, then the new first
    # and second moments and parameters). Each new buffer is the donated one it replaces,
    # updated in place, so its registered views (arrays the caller gave up) come back.
    from tapegrad._arrays._packed import views

    last = list(step._cache.values())[-1]
    name = next(k for k, v in last.run.__globals__.items() if v is views)
    assert step.sources()[-1].count(f" = {name}(") == 4
    new_arrays = [leaf.data for leaf in tg.tree.leaves((params, state)) if leaf.data.ndim]
    assert len(new_arrays) == 18 and {id(a) for a in new_arrays} <= given


def test_split_returns_the_registered_views_unless_one_was_reshaped_in_place() -> None:
    from tapegrad._arrays._packed import split, views

    layout = ((2, 3), (4,))
    flat = np.arange(10.0)
    first = split(flat, layout)
    again = views(flat, layout)
    assert all(a is b for a, b in zip(first, again, strict=True))
    assert [v.shape for v in views(flat, ((10,),))] == [(10,)]  # another layout: new views
    renewed = views(flat, layout)
    assert all(a is not b for a, b in zip(first, renewed, strict=True))
    renewed[0].shape = (3, 2)  # no longer the layout's view
    fresh = views(flat, layout)
    assert fresh[0] is not renewed[0] and fresh[0].shape == (2, 3)
    assert fresh[0].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]


def test_a_returned_piece_of_a_concatenation_written_in_place_later_keeps_its_values() -> None:
    def pieces(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        first = np.matmul(a.data, b.data)
        second = a.data.sum(axis=0)
        flat = np.concatenate([first.reshape(-1), second.reshape(-1)])
        flat *= 2.0  # were `first` written into `flat`, this would double it too
        return Tensor(first), Tensor(flat)

    replayed = tg.replay(pieces)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        a = tg.tensor(rng.standard_normal((3, 3)).astype(np.float32))
        b = tg.tensor(rng.standard_normal((3, 3)).astype(np.float32))
        assert_same(replayed(a, b), pieces(a, b))


# ---- 11. the generated guard of the last signature ----------------------------------------------


def weighted(tree: Any, scale: float = 1.0) -> Tensor:
    """A function of every leaf of ``tree``, position-dependent, so a swap shows."""
    total: Any = 0.0  # a Python number takes the leaves' dtype (float32 or float64)
    for i, leaf in enumerate(tg.tree.leaves(tree)):
        if isinstance(leaf, Tensor):
            total = total + (leaf * float(i + 1)).sum()
    result: Tensor = total * scale
    return result


def weighted_and_gradient(tree: Any, scale: float = 1.0) -> tuple[Tensor, Any]:
    """`weighted` and its gradient: a tensor passed twice gets the sum of both parts."""
    with tg.Tape() as tape:
        total = weighted(tree, scale)
    return total, tape.gradient(total, tree, unconnected="none")


def _t(values: list[float]) -> Tensor:
    return tg.tensor(np.asarray(values, np.float32))


GUARD_CASES: dict[str, tuple[Callable[[], tuple[Any, ...]], Callable[[], tuple[Any, ...]]]] = {
    "tied-vs-untied": (
        lambda: ((lambda w: {"a": w, "b": w})(_t([1.0, 2.0])),),
        lambda: ({"a": _t([1.0, 2.0]), "b": _t([3.0, 4.0])},),
    ),
    "dict-keys": (lambda: ({"a": _t([1.0]), "b": _t([2.0])},), lambda: ({"a": _t([1.0]), "c": _t([2.0])},)),
    "tuple-length": (lambda: ((_t([1.0]), _t([2.0])),), lambda: ((_t([1.0]), _t([2.0]), _t([3.0])),)),
    "list-vs-tuple": (lambda: ([_t([1.0]), _t([2.0])],), lambda: ((_t([1.0]), _t([2.0])),)),
    "static-scale": (lambda: ((_t([1.0]),), 2.0), lambda: ((_t([1.0]),), 3.0)),
    "strides": (
        lambda: (tg.tensor(np.arange(6, dtype=np.float32).reshape(2, 3)),),
        lambda: (tg.tensor(np.arange(6, dtype=np.float32).reshape(3, 2).T),),
    ),
    "dtype": (lambda: (_t([1.0, 2.0]),), lambda: (tg.tensor(np.asarray([1.0, 2.0])),)),
    "attrs-class": (
        lambda: (nn.LinearParams(_t([1.0]), _t([2.0])),),
        lambda: (nn.LinearParams(_t([1.0]), None),),
    ),
}


@pytest.mark.parametrize(("first", "second"), GUARD_CASES.values(), ids=GUARD_CASES.keys())
def test_alternating_signatures_each_replay_their_own_recording(
    first: Callable[[], tuple[Any, ...]], second: Callable[[], tuple[Any, ...]]
) -> None:
    replayed = tg.replay(weighted_and_gradient)
    for _ in range(3):
        for make in (first, second):
            args = make()
            assert_same(replayed(*args), weighted_and_gradient(*args))
    assert replayed.traces == 2
    assert replayed.replays == 4


# ---- 12. donated arguments -------------------------------------------------------------------------


def test_a_donated_training_step_is_bitwise_eager_and_writes_into_the_donated_buffers() -> None:
    model = nn.MLP(SIZES)
    opt = optim.adam(1e-3)
    step = make_step(model, opt)
    params = model.init(tg.random.key(0))
    state = opt.init(params)
    eager = run(step, params, state, DATA)
    donated = tg.replay(step, donate_argnums=(0, 1))
    assert_same(run(donated, params, state, DATA), eager)
    # The donation is real: a replay's results live in memory its arguments gave up.
    p, s = eager[0], eager[1]
    old = [leaf.data for leaf in tg.tree.leaves((p, s))]
    p2, s2, _ = donated(p, s, *DATA[0])
    new = [leaf.data for leaf in tg.tree.leaves((p2, s2))]
    assert any(np.shares_memory(a, b) for a in old for b in new)


def donated_compare(fn: Callable[..., Any], donate: tuple[int, ...], calls: list[Callable[[], tuple[Any, ...]]]) -> None:
    """``fn`` replayed with ``donate_argnums`` gives, call after call, what it gives eagerly."""
    replayed = tg.replay(fn, donate_argnums=donate)
    for make in calls:
        expected = fn(*make())  # before the replay: its arguments are given up to it
        assert_same(replayed(*make()), expected)


def float_pairs(n: int, size: int = 64) -> list[Callable[[], tuple[Any, ...]]]:
    rng = np.random.default_rng(7)
    pairs = [(rng.standard_normal(size), rng.standard_normal(size)) for _ in range(n)]
    return [(lambda m, g: lambda: (m.copy(), g.copy()))(m, g) for m, g in pairs]


def test_an_update_finishes_in_the_donated_argument_it_reads_last() -> None:
    def moment(m: Array, g: Array) -> Array:
        t = g - m
        t *= 0.1
        t += m  # m's last read: the result may live in m
        doubled: Array = t * 1.0 + t  # read after the move
        return doubled

    donated_compare(moment, (0,), float_pairs(3))
    replayed = tg.replay(moment, donate_argnums=(0,))
    m, g = float_pairs(1)[0]()
    replayed(m, g)
    assert "out=(v0,)" in replayed.sources()[-1]


def test_a_returned_view_of_the_update_taken_after_it_is_never_written_over() -> None:
    def view_after(m: Array, g: Array) -> tuple[Array, Array]:
        t = g - m
        t += m
        head = t[:8]  # made after the update: a view of m's memory once the update moves there
        u = t * 3.0 + 1.0
        return head, u * 2.0  # temporaries of m's shape must not land on head

    donated_compare(view_after, (0,), float_pairs(3))


def test_a_view_of_the_update_taken_before_it_keeps_its_values() -> None:
    def with_view(m: Array, g: Array) -> tuple[Array, Array]:
        t = g - m
        head = t[:8]  # a view of t made before the update, read after it
        t += m
        return t * 2.0, head * 3.0

    donated_compare(with_view, (0,), float_pairs(3))


def test_a_donated_argument_also_returned_is_not_updated_in_place() -> None:
    def returned(m: Array, g: Array) -> tuple[Array, Array]:
        t = g - m
        t += m
        return t * 2.0, m

    donated_compare(returned, (0,), float_pairs(3))


def test_an_update_that_is_itself_returned_stays_where_it_was_made() -> None:
    def update(m: Array, g: Array) -> Array:
        t = g - m
        t += m
        return t

    donated_compare(update, (0,), float_pairs(3))


def test_a_donated_argument_read_later_through_a_view_is_not_updated_in_place() -> None:
    def view_read_later(m: Array, g: Array) -> tuple[Array, Array]:
        head = m[:8]
        t = g - m
        t += m
        return t, head * 2.0

    donated_compare(view_read_later, (0,), float_pairs(3))


def test_an_update_before_a_guard_leaves_the_argument_whole_for_the_eager_rerun() -> None:
    def branchy(m: Array, g: Array) -> Array:
        t = g - m
        t += m
        if (t > 0).sum() > 32:  # a guard after the update: a flipped branch reruns eagerly
            return t * 2.0
        return t * 3.0

    rng = np.random.default_rng(3)
    makers = []
    for shift in (3.0, -3.0, 3.0):  # the branch flips on the second call
        m, g = rng.standard_normal(64), rng.standard_normal(64) + shift
        makers.append((lambda m, g: lambda: (m.copy(), g.copy()))(m, g))
    donated_compare(branchy, (0,), makers)


def test_an_argument_that_is_not_donated_is_never_written() -> None:
    def scaled(w: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return (w * 2.0 + 1.0) * 3.0, (x * 2.0 + 1.0) * 3.0

    replayed = tg.replay(scaled, donate_argnums=0)
    for seed in range(3):
        w = tg.tensor(np.random.default_rng(seed).standard_normal(64).astype(np.float32))
        x = tg.tensor(np.random.default_rng(seed + 9).standard_normal(64).astype(np.float32))
        x_before = x.numpy()
        expected = scaled(tg.tensor(w.numpy()), x)  # before the call: w is given up to it
        assert_same(replayed(w, x), expected)
        assert np.array_equal(x.numpy(), x_before)


def test_a_donated_tensor_also_passed_undonated_is_left_alone() -> None:
    def both(w: Tensor, same: Tensor) -> Tensor:
        return (w + same) * 2.0  # w dies at its first op: the op could take its memory

    replayed = tg.replay(both, donate_argnums=0)
    for seed in range(3):
        w = tg.tensor(np.random.default_rng(seed).standard_normal(64).astype(np.float32))
        before = w.numpy()
        assert_same(replayed(w, w), both(tg.tensor(before), tg.tensor(before)))
        assert np.array_equal(w.numpy(), before)


def test_a_failed_guard_after_donation_finds_its_arguments_intact() -> None:
    def late_branch(w: Tensor, x: Tensor) -> Tensor:
        a = (w * 2.0) * 3.0
        if (x.data > 0).all():  # a guard after w's last use
            return a + 1.0
        return a - 1.0

    replayed = tg.replay(late_branch, donate_argnums=0)
    positive, mixed = tg.tensor([1.0, 2.0]), tg.tensor([1.0, -2.0])
    for x in (positive, positive, mixed, positive, mixed):
        w = tg.tensor([0.5, -1.5])
        assert_same(replayed(w, x), late_branch(tg.tensor([0.5, -1.5]), x))
    assert replayed.eager_calls == 2


def test_debug_nans_inside_a_replay_reports_the_op_as_eagerly() -> None:
    def log_and_gradient(x: Tensor) -> tuple[Tensor, Tensor]:
        with tg.Tape() as tape:
            y = tg.log(x).sum()
        return y, tape.gradient(y, x)

    replayed = tg.replay(log_and_gradient)
    with tg.debug_nans():
        for values in ([1.0, 2.0], [3.0, 4.0]):
            x = tg.tensor(values)
            assert_same(replayed(x), log_and_gradient(x))
        # The anomaly checks are truth tests, so guards: a NaN fails one, and the eager rerun
        # raises exactly what an eager call raises.
        with pytest.raises(FloatingPointError, match="^`log` produced nan in its forward pass"):
            replayed(tg.tensor([-1.0, 2.0]))
    assert (replayed.traces, replayed.replays, replayed.eager_calls) == (1, 1, 1)
