"""`tapegrad.replay`'s semantics where a function leaves the happy path.

As `jax.jit` documents them, but loud where JAX is loud: a failed donated
call, a value that escapes by a side effect, an argument changed in place,
arguments that share memory, random generators as arguments, value-shaped
results, read-only arrays, a signature that changes every call, another
thread's random draws, and printing. Each test reproduces a case that once
gave a silent difference from the eager run.
"""

from __future__ import annotations

import gc
import re
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import tapegrad as tg
from tapegrad import ReplayError, Tensor
from tapegrad._replay import _replayed as _replay


def exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


# ---- 1. a donated call that raises ----------------------------------------------------------

CONSUMED = (
    "replay: this tensor was donated (donate_argnums) to a replayed call that raised, "
    "so its memory may hold a partial update; it cannot be used any more. Keep the "
    "arguments you may need after a failure (or do not donate them), as with jax.jit."
)


def _scaled(w: Tensor, x: Tensor) -> Tensor:
    return w * x + 1.0


def test_a_donated_call_that_raises_leaves_its_tensors_unusable_not_half_written() -> None:
    step = tg.replay(_scaled, donate_argnums=0)
    x = tg.tensor(np.full(4, 2.0))
    w = tg.tensor(np.ones(4))
    for _ in range(2):
        w = step(w, x)
    assert step.replays == 1
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        step(w, tg.tensor(np.full(4, 1e308)))
    with pytest.raises(ReplayError, match=exact(CONSUMED)):
        w.numpy()
    with pytest.raises(ReplayError, match=exact(CONSUMED)):
        _scaled(w, x)


def test_without_donation_a_call_that_raises_leaves_its_arguments_intact() -> None:
    step = tg.replay(_scaled)
    x = tg.tensor(np.full(4, 2.0))
    w = step(step(tg.tensor(np.ones(4)), x), x)
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        step(w, tg.tensor(np.full(4, 1e308)))
    np.testing.assert_array_equal(w.numpy(), np.full(4, 7.0))


# ---- 2. a traced value that escapes by a side effect ---------------------------------------

ESCAPED = (
    "replay: a value computed inside the replayed function outlived the call without "
    "being returned (it was stored by a side effect, such as history.append(loss) or "
    "self.x = y); a replay would never update it. Return it from the function and store "
    "it outside."
)


def test_a_value_stored_by_a_side_effect_is_refused_when_traced() -> None:
    history: list[Tensor] = []

    def step(w: Tensor) -> Tensor:
        loss = (w * w).sum()
        history.append(loss)
        return w * 0.5

    with pytest.raises(ReplayError, match=exact(ESCAPED)):
        tg.replay(step)(tg.tensor(np.ones(3)))


def test_returned_values_and_dropped_temporaries_are_not_escapes() -> None:
    def step(w: Tensor) -> tuple[Tensor, Tensor]:
        scratch = [w * 2.0, w + 1.0]
        return scratch[0], (w * w).sum()

    replayed = tg.replay(step)
    for _ in range(3):
        replayed(tg.tensor(np.ones(3)))
    assert replayed.replays == 2


# ---- 3. an argument container changed in place ---------------------------------------------


def test_an_argument_dict_updated_in_place_is_refused() -> None:
    def step(params: dict[str, Tensor]) -> Tensor:
        params["w"] = params["w"] * 0.5
        return params["w"].sum()

    message = (
        "replay: the function changed its arguments in place (args[0]['w'] was replaced, "
        "added or removed); a replay cannot carry that change to the caller's objects. "
        "Return the new value instead (e.g. `return new_params`)."
    )
    params = {"w": tg.tensor(np.ones(2))}
    with pytest.raises(ReplayError, match=exact(message)):
        tg.replay(step)(params)


def test_an_argument_list_appended_to_is_refused() -> None:
    def step(items: list[Tensor]) -> Tensor:
        items.append(items[0] * 2.0)
        return items[0].sum()

    message = (
        "replay: the function changed its arguments in place (an argument's container was "
        "replaced, added or removed); a replay cannot carry that change to the caller's "
        "objects. Return the new value instead (e.g. `return new_params`)."
    )
    with pytest.raises(ReplayError, match=exact(message)):
        tg.replay(step)([tg.tensor(np.ones(2))])


# ---- 4. and 7. donated memory that another argument reads, or that is read-only -----------


def _axpy(w: Tensor, v: Tensor) -> Tensor:
    return w * 2.0 + v


def _donating_axpy() -> _replay.Replayed[[Tensor, Tensor], Tensor]:
    """`_axpy`, donating ``w``, traced and replayed once on arrays with memory of their own."""
    step = tg.replay(_axpy, donate_argnums=0)
    for _ in range(2):
        step(tg.tensor(np.arange(4.0)), tg.tensor(np.ones(4)))
    return step


def test_a_donated_argument_sharing_memory_with_another_is_not_overwritten() -> None:
    step = _donating_axpy()  # traced with separate memory
    w = tg.tensor(np.arange(4.0))
    out = step(w, Tensor(w.data))  # the same memory under two tensors
    np.testing.assert_array_equal(out.numpy(), np.arange(4.0) * 3)
    np.testing.assert_array_equal(w.numpy(), np.arange(4.0))
    assert step.eager_calls == 1


def test_a_donated_argument_overlapping_another_as_a_view_is_not_overwritten() -> None:
    step = _donating_axpy()
    base = np.arange(6.0)
    out = step(Tensor(base[:4]), Tensor(base[2:]))
    np.testing.assert_array_equal(out.numpy(), np.arange(4.0) * 2 + np.arange(2.0, 6.0))


def test_a_read_only_donated_array_works_as_eagerly() -> None:
    step = _donating_axpy()
    frozen = np.arange(4.0)
    frozen.flags.writeable = False
    out = step(Tensor(frozen), tg.tensor(np.ones(4)))
    np.testing.assert_array_equal(out.numpy(), np.arange(4.0) * 2 + 1)
    np.testing.assert_array_equal(frozen, np.arange(4.0))
    fresh = tg.replay(_axpy, donate_argnums=0)  # traced on a read-only array: never donates it
    for _ in range(2):
        np.testing.assert_array_equal(fresh(Tensor(frozen), tg.tensor(np.ones(4))).numpy(), frozen * 2 + 1)


# ---- 5. a random generator as an argument ---------------------------------------------------


@pytest.mark.parametrize(
    "generator", [np.random.default_rng(0), np.random.RandomState(0)], ids=["Generator", "RandomState"]
)
def test_a_numpy_generator_argument_is_refused(generator: Any) -> None:
    def noisy(x: Tensor, rng: Any) -> Tensor:
        return x + tg.tensor(rng.normal(size=x.shape))

    message = (
        f"replay: an argument is a {type(generator).__name__}; a replay would repeat the numbers it "
        "drew when traced on every call. Draw the random arrays outside the replayed function "
        "and pass them in (or pass a tapegrad.random key, which retraces per key)."
    )
    with pytest.raises(ReplayError, match=exact(message)):
        tg.replay(noisy)(tg.tensor(np.zeros(3)), generator)


# ---- 6. results whose shape depends on the values -------------------------------------------

VALUE_SHAPED: dict[str, Callable[[Any], Any]] = {
    "delete-mask": lambda d: np.delete(d, d > 0.5),
    "nonzero": lambda d: d[np.nonzero(d > 0.5)],
    "unique": np.unique,
    "boolean-index": lambda d: d[d > 0.5],
    "compress": lambda d: np.compress(d > 0.5, d),
    "extract": lambda d: np.extract(d > 0.5, d),
}


@pytest.mark.parametrize("name", sorted(VALUE_SHAPED))
def test_value_shaped_results_are_guarded(name: str) -> None:
    fn = VALUE_SHAPED[name]

    def f(x: Tensor) -> Tensor:
        scratch = x * 3.0  # a dead buffer of the traced result's shape, free for reuse
        picked = Tensor(fn(x.data))
        return (picked - 2.0) * 1.0 + scratch[: picked.shape[0]].sum() * 0.0

    replayed = tg.replay(f)
    inputs = [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0], [0.0, 1.0, 3.0]]
    for values in inputs:
        x = tg.tensor(np.array(values))
        np.testing.assert_array_equal(replayed(x).numpy(), f(x).numpy())
    assert replayed.replays >= 1 and replayed.eager_calls >= 1


# ---- 8. a signature that changes every call -------------------------------------------------


def test_the_cache_is_bounded_and_a_changing_python_number_is_named() -> None:
    def sgd(w: Tensor, g: Tensor, lr: float) -> Tensor:
        return w - lr * g

    replayed = tg.replay(sgd)
    w, g = tg.tensor(np.ones(3)), tg.tensor(np.full(3, 0.1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(400):
            w = replayed(w, g, 0.1 * 0.99**step)
    retraces = [w for w in caught if issubclass(w.category, tg.ReplayRetraceWarning)]
    assert len(retraces) == 1 and len(caught) == 1
    lr = 0.1 * 0.99 ** (_replay.RETRACE_WARNING_AFTER - 1)
    assert str(retraces[0].message) == (
        f"replay: `sgd` has been traced {_replay.RETRACE_WARNING_AFTER} times; the last trace "
        f"was caused by args[2] (a float, now {lr!r:.40}) changing value. Python numbers and "
        "other non-array arguments are part of the signature, so a value that changes every call "
        "retraces every call: pass it as a 0-d tensor (tapegrad.tensor(value)) instead."
    )
    assert replayed.traces == 400 and replayed.cache_size == _replay.MAX_CACHED_SIGNATURES


def test_a_0d_tensor_learning_rate_traces_once() -> None:
    replayed = tg.replay(lambda w, lr: w - lr * w)
    w = tg.tensor(np.ones(3, dtype=np.float32))  # tg.tensor(float) is float32 too
    for step in range(20):
        w = replayed(w, tg.tensor(0.1 * 0.99**step))
    assert replayed.traces == 1 and replayed.replays == 19


# ---- 9. another thread's random draws --------------------------------------------------------


@contextmanager
def _in_another_thread(target: Callable[[], object], *stop: threading.Event) -> Iterator[None]:
    """Runs ``target`` in another thread for the block; after it, sets the ``stop`` events and joins."""
    thread = threading.Thread(target=target)
    thread.start()
    try:
        yield
    finally:
        for event in stop:
            event.set()
        thread.join()


def test_another_threads_random_draws_do_not_fail_a_trace() -> None:
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            np.random.normal(size=16)

    def f(x: Tensor) -> Tensor:
        for _ in range(200):
            x = x * 1.0001 + 0.0001
        return x

    with _in_another_thread(draw, stop):
        for _ in range(20):
            replayed = tg.replay(f)
            replayed(tg.tensor(np.ones(8)))
            assert replayed.traces == 1


def test_this_threads_draw_is_still_refused_while_another_thread_runs() -> None:
    stop = threading.Event()
    with _in_another_thread(stop.wait, stop):
        with pytest.raises(ReplayError, match="global random generator"):
            tg.replay(lambda x: x + tg.tensor(np.random.normal(size=3)))(tg.tensor(np.zeros(3)))


# ---- 10. printing ----------------------------------------------------------------------------


def test_debug_print_prints_on_every_call_eager_or_replayed(capsys: pytest.CaptureFixture[str]) -> None:
    def f(x: Tensor) -> Tensor:
        y = x * 2.0
        tg.debug.print("y = {} (step {})", y, "n")
        return y

    replayed = tg.replay(f)
    for i in range(3):
        replayed(tg.tensor(np.array([float(i)])))
    f(tg.tensor(np.array([5.0])))
    assert capsys.readouterr().out.splitlines() == [
        "y = [0.] (step n)", "y = [2.] (step n)", "y = [4.] (step n)", "y = [10.] (step n)",
    ]
    assert replayed.replays == 2


def test_print_of_a_traced_value_says_what_to_use() -> None:
    message = (
        "replay: print(), str() or format() of a traced value inside a replayed function would "
        "show the value once, when traced, and never on a replay. Use "
        "tapegrad.debug.print('loss {}', loss), which prints on every call, eager or replayed."
    )

    def shows(x: Tensor) -> Tensor:
        print(x)
        return x

    with pytest.raises(ReplayError, match=exact(message)):
        tg.replay(shows)(tg.tensor(1.0))
    with pytest.raises(ReplayError, match=exact(message)):
        tg.replay(lambda x: print(f"{x.data}") or x)(tg.tensor(1.0))


# ---- review of the above ---------------------------------------------------------------------


def test_a_traced_call_keeps_none_of_its_input_arrays_alive() -> None:
    def step(w: Tensor, g: Tensor) -> Tensor:
        return w - 0.1 * g

    replayed = tg.replay(step, donate_argnums=0)
    w, g = tg.tensor(np.ones(1000)), tg.tensor(np.ones(1000))
    inputs = [weakref.ref(w.data), weakref.ref(g.data)]
    w = replayed(w, g)
    del g
    gc.collect()
    assert [ref() for ref in inputs] == [None, None]  # the retrace warning's memory holds no arrays


def test_debug_print_before_a_branch_that_flips_prints_once(capsys: pytest.CaptureFixture[str]) -> None:
    def f(x: Tensor) -> Tensor:
        tg.debug.print("x {}", x)
        if bool((x.data > 0).all()):  # a guard after the print
            return x * 2.0
        return x * 3.0

    replayed = tg.replay(f)
    for value in [1.0, 2.0, -1.0, 3.0]:
        replayed(tg.tensor(np.array([value])))
    # The third call's replay printed, then failed its guard and ran eagerly: one line, not two.
    assert capsys.readouterr().out.splitlines() == ["x [1.]", "x [2.]", "x [-1.]", "x [3.]"]
    assert (replayed.replays, replayed.eager_calls) == (2, 1)


def test_debug_print_shows_the_value_when_printed_not_after_its_buffer_is_reused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def f(x: Tensor) -> Tensor:
        y = x * 2.0
        tg.debug.print("y {}", y)
        return ((y + 1.0) * 5.0 + 1.0) * 7.0  # y's buffer is dead, free for these results

    replayed = tg.replay(f)
    for value in [1.0, 2.0, 3.0]:
        replayed(tg.tensor(np.array([value])))
    assert capsys.readouterr().out.splitlines() == ["y [2.]", "y [4.]", "y [6.]"]


def test_debug_print_before_an_error_prints_as_eagerly(capsys: pytest.CaptureFixture[str]) -> None:
    def f(x: Tensor) -> Tensor:
        tg.debug.print("x {}", x)
        return x * 1e307

    replayed = tg.replay(f)
    for value in [1.0, 2.0]:
        replayed(tg.tensor(np.array([value])))
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        replayed(tg.tensor(np.array([100.0])))
    assert capsys.readouterr().out.splitlines() == ["x [1.]", "x [2.]", "x [100.]"]


# A generator the function reads from outside its arguments is frozen as one passed in would be.
_MODULE_RNG = np.random.default_rng(0)


def _drawn_from(kind: str) -> str:
    return (
        f"replay: the function drew numbers from a {kind} that it reads from outside its "
        "arguments (a global, a closure cell or an attribute), which a replay would freeze at "
        "this call's draw; draw them outside and pass them in as an argument"
    )


def _noisy_global(x: Tensor) -> Tensor:
    return x + tg.tensor(_MODULE_RNG.normal(size=x.shape))


class _Noisy:
    def __init__(self) -> None:
        self.rng = np.random.RandomState(0)

    def step(self, x: Tensor) -> Tensor:
        return x * tg.tensor(self.rng.uniform(size=x.shape))


def test_a_global_generator_drawn_from_is_refused() -> None:
    with pytest.raises(ReplayError, match=exact(_drawn_from("Generator"))):
        tg.replay(_noisy_global)(tg.tensor(np.zeros(2)))


def test_a_generator_in_a_closure_or_on_the_methods_object_is_refused() -> None:
    rng = np.random.RandomState(1)

    def noisy(x: Tensor) -> Tensor:
        return x + tg.tensor(rng.normal(size=x.shape))

    with pytest.raises(ReplayError, match=exact(_drawn_from("RandomState"))):
        tg.replay(noisy)(tg.tensor(np.zeros(2)))
    with pytest.raises(ReplayError, match=exact(_drawn_from("RandomState"))):
        tg.replay(_Noisy().step)(tg.tensor(np.zeros(2)))
    with pytest.raises(ReplayError, match=exact(_drawn_from("Generator"))):  # one call further down
        tg.replay(lambda x: _noisy_global(x) * 2.0)(tg.tensor(np.zeros(2)))


def test_an_unseeded_default_rng_is_refused_and_a_seeded_one_replays() -> None:
    message = (
        "replay: the function made np.random.default_rng() without a seed, which draws "
        "different numbers on every eager call, but a replay would freeze them at this call's "
        "draw; draw them outside and pass them in as an argument (or give it a seed)"
    )
    with pytest.raises(ReplayError, match=exact(message)):
        tg.replay(lambda x: x + tg.tensor(np.random.default_rng().normal(size=2)))(tg.tensor(np.zeros(2)))
    seeded = tg.replay(lambda x: x + tg.tensor(np.random.default_rng(3).normal(size=2)))
    results = [seeded(tg.tensor(np.zeros(2))).numpy() for _ in range(3)]
    np.testing.assert_array_equal(results[2], np.random.default_rng(3).normal(size=2))
    assert seeded.replays == 2


def test_a_generator_named_but_not_drawn_from_replays() -> None:
    rng = np.random.default_rng(0)

    def step(x: Tensor, noise: Tensor) -> Tensor:
        if rng is None:  # named, never drawn from
            return x
        return x + noise

    replayed = tg.replay(step)
    for _ in range(3):
        replayed(tg.tensor(np.zeros(2)), tg.tensor(rng.normal(size=2)))
    assert replayed.replays == 2


def test_the_wrappers_replay_refuses_a_global_generator_too() -> None:
    from tapegrad import torchlike as tl

    net = tl.Linear(3, 2)
    opt = tl.SGD(net.parameters(), lr=0.1)

    def step(x: tl.Tensor) -> tl.Tensor:
        opt.zero_grad()
        loss: tl.Tensor = net(x + tl.Tensor(_MODULE_RNG.normal(size=(4, 3)))).sum()
        loss.backward()
        opt.step()
        return loss

    with pytest.raises(ReplayError, match=exact(_drawn_from("Generator"))):
        tl.replay(step, net, opt)(tl.Tensor(np.ones((4, 3))))


def test_donated_views_of_one_array_that_do_not_overlap_still_replay_in_place() -> None:
    step = _donating_axpy()
    base = np.arange(8.0)
    out = step(Tensor(base[:4]), Tensor(base[4:]))  # one owner, disjoint halves
    np.testing.assert_array_equal(out.numpy(), np.arange(4.0) * 2 + np.arange(4.0, 8.0))
    assert (step.replays, step.eager_calls) == (2, 0)


def test_donated_memory_owned_by_a_buffer_is_compared_by_extent() -> None:
    step = _donating_axpy()
    memory = bytearray(np.arange(4.0).tobytes())
    w, v = np.frombuffer(memory), np.frombuffer(memory)  # two arrays, one bytearray
    out = step(Tensor(w), Tensor(v))
    np.testing.assert_array_equal(out.numpy(), np.arange(4.0) * 3)
    np.testing.assert_array_equal(w, np.arange(4.0))
    assert step.eager_calls == 1


def _retrace_warnings(replayed: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for call in calls:
            replayed(*call)
    return [str(w.message) for w in caught if issubclass(w.category, tg.ReplayRetraceWarning)]


def test_a_retrace_warning_for_changing_shapes_advises_buckets_not_a_0d_tensor() -> None:
    def mean(x: Tensor) -> Tensor:
        return x.mean()

    n = _replay.RETRACE_WARNING_AFTER
    shapes = [(tg.tensor(np.ones(size)),) for size in range(1, n + 1)]
    assert _retrace_warnings(tg.replay(mean), shapes) == [
        f"replay: `mean` has been traced {n} times; the last trace was caused by args[0] changing "
        "shape, dtype or memory layout. Each array's shape, dtype and memory layout are part of "
        "the signature: pad or bucket the inputs to a few shapes, and pass contiguous arrays of "
        "one dtype."
    ]
    structures = [([tg.tensor(np.ones(2))] * k,) for k in range(1, n + 1)]
    assert _retrace_warnings(tg.replay(lambda xs: xs[0] * 2.0), structures) == [
        f"replay: `<lambda>` has been traced {n} times; the last trace was caused by a change in "
        "the structure of the arguments. The arguments' structure (containers, their keys and "
        "lengths) is part of the signature: keep it the same from call to call."
    ]


def test_debug_print_of_the_wrappers_tensors_prints_on_every_replayed_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tapegrad import torchlike as tl

    net = tl.Linear(2, 1)
    net.weight.value = tg.tensor(np.ones_like(net.weight.value.data))
    assert net.bias is not None
    net.bias.value = tg.tensor(np.zeros_like(net.bias.value.data))
    opt = tl.SGD(net.parameters(), lr=0.25)

    def step(x: tl.Tensor) -> tl.Tensor:
        opt.zero_grad()
        loss: tl.Tensor = net(x).sum()
        tg.debug.print("loss {}", loss)
        loss.backward()
        opt.step()
        return loss

    replayed = tl.replay(step, net, opt)
    x = np.ones((1, 2), dtype=net.weight.value.dtype)
    for _ in range(3):
        replayed(tl.Tensor(x))
    step(tl.Tensor(x))  # eagerly, the same line
    assert capsys.readouterr().out.splitlines() == ["loss 2.0", "loss 1.25", "loss 0.5", "loss -0.25"]


def test_a_donated_call_that_raises_names_the_bare_arrays_it_could_not_mark() -> None:
    def step(state: tuple[Any, Any], x: Tensor) -> tuple[Tensor, Tensor]:
        a, b = state
        return a * x + 1.0, tg.tensor(b) * x + 1.0

    replayed = tg.replay(step, donate_argnums=0)
    x = tg.tensor(np.full(4, 2.0))
    state: tuple[Any, Any] = (tg.tensor(np.ones(4)), np.ones(4))
    for _ in range(2):
        a, b = replayed(state, x)
        state = (a, b.numpy())
    with np.errstate(over="raise"), pytest.raises(FloatingPointError) as raised:
        replayed(state, tg.tensor(np.full(4, 1e308)))
    assert raised.value.__notes__ == [
        "replay: the donated NumPy arrays args[0][1] may hold a partial update: unlike a donated "
        "Tensor, a bare array cannot be marked used up. Donate Tensors, or keep copies of the "
        "arrays you need after a failure."
    ]
    with pytest.raises(ReplayError, match=exact(CONSUMED)):
        state[0].numpy()


def test_debug_print_of_plain_values_prints_on_every_replayed_call(capsys: pytest.CaptureFixture[str]) -> None:
    def f(x: Tensor, step: int) -> Tensor:
        tg.debug.print("step {}", step)
        tg.debug.print("no values")
        return x * 2.0

    replayed = tg.replay(f)
    for _ in range(3):
        replayed(tg.tensor(np.ones(2)), 7)
    assert capsys.readouterr().out.splitlines() == ["step 7", "no values"] * 3
    assert replayed.replays == 2


def test_another_threads_generator_on_an_object_the_step_uses_is_not_blamed() -> None:
    class Trainer:
        def __init__(self) -> None:
            self.scale = 2.0
            self.loader_rng = np.random.default_rng(0)  # drawn from by the loader thread only

    trainer = Trainer()
    ask, drawn, stop = threading.Event(), threading.Event(), threading.Event()

    def step(x: Tensor) -> Tensor:
        ask.set()  # the loader draws while this is traced
        drawn.wait()
        drawn.clear()
        return x * trainer.scale

    def load() -> None:
        while True:
            ask.wait()
            ask.clear()
            if stop.is_set():
                return
            trainer.loader_rng.normal(size=16)
            drawn.set()

    with _in_another_thread(load, stop, ask):
        for _ in range(3):
            replayed = tg.replay(step)
            replayed(tg.tensor(np.ones(8)))
            assert replayed.traces == 1


def test_debug_print_is_held_even_when_a_nested_replay_is_traced_after_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    inner = tg.replay(lambda c: c * 2.0)

    def f(x: Tensor) -> Tensor:
        tg.debug.print("x {}", x)
        inner(tg.tensor(np.ones(1)))  # traced inside this trace: its own recording
        if bool((x.data > 0).all()):
            return x * 2.0
        return x * 3.0

    replayed = tg.replay(f)
    for value in [1.0, 2.0, -1.0]:
        replayed(tg.tensor(np.array([value])))
    assert capsys.readouterr().out.splitlines() == ["x [1.]", "x [2.]", "x [-1.]"]
    assert inner.traces == 1
