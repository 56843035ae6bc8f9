"""The tape's life cycle: recording, `gradient`, nesting, sources as pytrees, memory."""

from __future__ import annotations

import gc
import re
import threading
import weakref
from typing import Any, NamedTuple

import attrs
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tape, Tensor


def test_gradient_of_a_simple_expression() -> None:
    x = tg.tensor([1.0, 2.0, 3.0])
    with Tape() as tape:
        y = (x * x + 3.0 * x).sum()
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [5.0, 7.0, 9.0])


# ---- one use, or many --------------------------------------------------------------
def test_a_second_gradient_call_on_a_non_persistent_tape_raises() -> None:
    x = tg.tensor(2.0)
    with Tape() as tape:
        y = x * x
    tape.gradient(y, x)
    message = (
        "Tape.gradient: this tape was already used; a non-persistent tape allows one "
        "gradient() call. Use Tape(persistent=True) to call it several times."
    )
    with pytest.raises(RuntimeError, match=re.escape(message)):
        tape.gradient(y, x)


def test_a_used_tape_cannot_record_again() -> None:
    x = tg.tensor(2.0)
    with Tape() as tape:
        y = x * x
    tape.gradient(y, x)
    with pytest.raises(RuntimeError, match="was used by gradient\\(\\) already"):
        with tape:
            pass


def test_a_persistent_tape_allows_many_gradient_calls() -> None:
    x = tg.tensor(3.0)
    with Tape(persistent=True) as tape:
        y = x * x
        z = y * x
    assert tape.persistent
    assert tape.gradient(y, x).item() == 6.0
    assert tape.gradient(z, x).item() == 27.0
    assert tape.gradient(z, x).item() == 27.0
    assert tape.gradient(z, y).item() == 3.0
    tape.close()
    assert len(tape) == 0


def test_re_entering_an_active_tape_raises() -> None:
    tape = Tape()
    with tape:
        with pytest.raises(RuntimeError, match="a tape cannot be entered twice"):
            with tape:
                pass


def test_repr_and_len_describe_the_records() -> None:
    x = tg.tensor([1.0, 2.0])
    with Tape() as tape:
        (x * x).sum()
    assert len(tape) == 2
    assert repr(tape) == "Tape(persistent=False, records=2, bytes=12)"


# ---- what gets recorded ----------------------------------------------------------------
def test_is_recording_only_inside_a_tape() -> None:
    assert not tg.is_recording()
    with Tape():
        assert tg.is_recording()
    assert not tg.is_recording()


def test_ops_under_stop_recording_are_not_recorded() -> None:
    x = tg.tensor(2.0)
    with Tape() as tape:
        with tape.stop_recording():
            constant = x * x
        y = constant * x
    assert len(tape) == 1
    assert tape.gradient(y, x).item() == 4.0  # not 12: x * x was a constant


def test_stop_recording_pauses_only_its_own_tape() -> None:
    x = tg.tensor(2.0)
    with Tape() as outer:
        with Tape() as inner:
            with inner.stop_recording():
                y = x * x * x
        assert len(inner) == 0
    assert outer.gradient(y, x).item() == 12.0


def test_stop_recording_outside_the_tape_raises() -> None:
    tape = Tape()
    with pytest.raises(RuntimeError, match="this tape is not recording"):
        with tape.stop_recording():
            pass


def test_a_tape_exited_while_paused_stays_stopped_after_the_pause() -> None:
    x = tg.tensor(2.0)
    tape = Tape()
    tape.__enter__()
    with tape.stop_recording():
        tape.__exit__(None, None, None)  # as the wrapper closes its tape inside no_grad()
    assert not tape.recording and not tg.is_recording()
    x * x
    assert len(tape) == 0


def test_stop_gradient_cuts_the_path() -> None:
    x = tg.tensor(3.0)
    with Tape() as tape:
        y = x * tg.stop_gradient(x * x)
    assert tape.gradient(y, x).item() == 9.0


def test_comparisons_and_integer_results_are_not_recorded() -> None:
    x = tg.tensor([1.0, -2.0])
    with Tape() as tape:
        _ = x > 0
        _ = x.argmax()
        _ = tg.tensor([1, 2]) + 1
    assert len(tape) == 0


# ---- nesting: gradients of gradients ------------------------------------------------------
def test_nested_tapes_give_second_and_third_derivatives() -> None:
    x = tg.tensor(2.0)
    with Tape() as t3:
        with Tape() as t2:
            with Tape() as t1:
                y = x**3
            dy = t1.gradient(y, x)
        d2y = t2.gradient(dy, x)
    d3y = t3.gradient(d2y, x)
    assert (dy.item(), d2y.item(), d3y.item()) == (12.0, 12.0, 6.0)


def test_second_derivative_of_a_product_of_functions() -> None:
    x = tg.tensor(0.5, dtype=np.float64)
    with Tape() as outer:
        with Tape() as inner:
            y = tg.sin(x) * tg.exp(x)
        dy = inner.gradient(y, x)
    d2y = outer.gradient(dy, x)
    np.testing.assert_allclose(d2y.item(), 2 * np.cos(0.5) * np.exp(0.5))


def test_gradient_inside_the_tape_block_is_recorded_by_outer_tapes_only() -> None:
    x = tg.tensor(1.5)
    with Tape() as outer:
        with Tape(persistent=True) as inner:
            y = x * x
            dy = inner.gradient(y, x)
            before = len(inner)
        assert len(inner) == before  # its own backward pass is not on it
    assert outer.gradient(dy, x).item() == 2.0


# ---- unconnected sources -----------------------------------------------------------
def _unused_source_grads(unconnected: tg._core._tape.Unconnected) -> dict[str, Tensor | None]:
    params = {"used": tg.tensor([1.0, 2.0]), "unused": tg.tensor([[1.0], [2.0]])}
    with Tape() as tape:
        y = params["used"].sum()
    return tape.gradient(y, params, unconnected=unconnected)  # type: ignore[arg-type]


def test_unconnected_sources_get_zeros_by_default() -> None:
    grads = _unused_source_grads("zero")
    unused = grads["unused"]
    assert unused is not None
    assert unused.shape == (2, 1) and unused.dtype == np.float32
    np.testing.assert_array_equal(unused.numpy(), [[0.0], [0.0]])


def test_unconnected_none_gives_none() -> None:
    grads = _unused_source_grads("none")
    assert grads["unused"] is None
    assert grads["used"] is not None


def test_unconnected_error_names_the_source_path() -> None:
    message = (
        "Tape.gradient: sources['unused'] does not influence the target. Likely causes: "
        "it was never used, it was used under stop_recording() or stop_gradient(), it "
        "went through .numpy(), or it passed through an integer op."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        _unused_source_grads("error")


def test_unconnected_must_be_one_of_three_words() -> None:
    x = tg.tensor(1.0)
    with Tape() as tape:
        y = x * 2
    with pytest.raises(ValueError, match="unconnected must be 'zero', 'none' or 'error', got 'zeros'"):
        tape.gradient(y, x, unconnected="zeros")  # type: ignore[arg-type]


# ---- targets and output gradients ---------------------------------------------------------
def test_a_non_scalar_target_needs_output_gradients() -> None:
    x = tg.tensor([1.0, 2.0])
    with Tape() as tape:
        y = x * x
    message = (
        "Tape.gradient: target has shape (2,), not a scalar. Reduce it first (e.g. "
        "loss.sum() or loss.mean()), or pass output_gradients= with shape (2,)."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        tape.gradient(y, x)


def test_output_gradients_weight_a_non_scalar_target() -> None:
    x = tg.tensor([1.0, 2.0])
    with Tape() as tape:
        y = x * x
    g = tape.gradient(y, x, output_gradients=tg.tensor([10.0, -1.0]))
    np.testing.assert_array_equal(g.numpy(), [20.0, -4.0])


def test_output_gradients_must_match_the_target_shape() -> None:
    x = tg.tensor([1.0, 2.0])
    with Tape() as tape:
        y = x * x
    message = (
        "Tape.gradient: output_gradients has shape (3,) but the target has shape (2,); "
        "they must match"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        tape.gradient(y, x, output_gradients=tg.tensor([1.0, 1.0, 1.0]))


def test_a_one_element_target_of_any_rank_is_a_scalar() -> None:
    x = tg.tensor([[2.0]])
    with Tape() as tape:
        y = x * x
    assert tape.gradient(y, x).numpy().tolist() == [[4.0]]


def test_the_gradient_of_a_source_with_respect_to_itself_is_a_fresh_one() -> None:
    x = tg.tensor(5.0)
    with Tape() as tape:
        pass
    g = tape.gradient(x, x)
    assert g.item() == 1.0
    assert g is not x


# ---- sources: dtype checks --------------------------------------------------------------
def test_an_integer_source_raises() -> None:
    labels = tg.tensor([1, 2])
    x = tg.tensor([1.0, 2.0])
    with Tape() as tape:
        y = (x * labels).sum()
    message = (
        "Tape.gradient: sources[1] has dtype int64; only floating tensors can be "
        "differentiated. Cast it first, e.g. x.astype('float32')."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        tape.gradient(y, [x, labels])


def test_a_non_tensor_leaf_in_sources_raises() -> None:
    x = tg.tensor(1.0)
    with Tape() as tape:
        y = x * 2
    message = (
        "Tape.gradient: sources['lr'] is a float, not a Tensor; every leaf of `sources` "
        "must be a Tensor (or None)"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        tape.gradient(y, {"x": x, "lr": 0.1})


# ---- sources: any pytree, the same structure back ---------------------------------------------
class Pair(NamedTuple):
    first: Tensor
    second: Tensor


@attrs.frozen
class Linear:
    weight: Tensor
    bias: Tensor | None


@attrs.frozen
class Model:
    layers: tuple[Linear, ...]
    scale: Tensor


def test_sources_as_a_tensor_list_tuple_and_dict() -> None:
    a, b = tg.tensor(2.0), tg.tensor(3.0)
    with Tape(persistent=True) as tape:
        y = a * b
    ga = tape.gradient(y, a)
    assert isinstance(ga, Tensor) and ga.item() == 3.0
    as_list = tape.gradient(y, [a, b])
    assert isinstance(as_list, list) and [g.item() for g in as_list] == [3.0, 2.0]
    as_tuple = tape.gradient(y, (b, a))
    assert isinstance(as_tuple, tuple) and [g.item() for g in as_tuple] == [2.0, 3.0]
    as_dict = tape.gradient(y, {"b": b, "a": a})
    assert list(as_dict) == ["a", "b"]  # keys come back in sorted order
    assert {k: g.item() for k, g in as_dict.items()} == {"a": 3.0, "b": 2.0}


def test_none_leaves_stay_none() -> None:
    a = tg.tensor(2.0)
    with Tape() as tape:
        y = a * a
    sources: dict[str, Any] = {"a": a, "nothing": None, "nested": [None, a]}
    grads = tape.gradient(y, sources)
    assert grads["nothing"] is None
    assert grads["nested"][0] is None
    assert grads["a"].item() == 4.0 and grads["nested"][1].item() == 4.0
    assert grads["a"].data is not grads["nested"][1].data  # never aliased


def test_sources_as_frozen_attrs_classes_and_named_tuples() -> None:
    model = Model(
        layers=(Linear(tg.tensor([[1.0, 2.0]]), tg.tensor([0.5])), Linear(tg.tensor([[3.0]]), None)),
        scale=tg.tensor(2.0),
    )
    pair = Pair(tg.tensor(1.0), tg.tensor(-1.0))
    x = tg.tensor([[1.0], [1.0]])
    first = model.layers[0]
    assert first.bias is not None
    with Tape(persistent=True) as tape:
        h = x.T @ first.weight.T + first.bias
        y = (h @ model.layers[1].weight * model.scale).sum() + pair.first * pair.second
    grads = tape.gradient(y, model)
    assert type(grads) is Model and type(grads.layers[0]) is Linear
    assert grads.layers[1].bias is None
    assert grads.scale.item() == 3.0 * (3.0 + 0.5)
    np.testing.assert_array_equal(grads.layers[0].weight.numpy(), [[6.0, 6.0]])
    pair_grads = tape.gradient(y, pair)
    assert type(pair_grads) is Pair and (pair_grads.first.item(), pair_grads.second.item()) == (-1.0, 1.0)


def test_a_source_listed_twice_gets_two_separate_gradients() -> None:
    x = tg.tensor([1.0, 2.0])
    with Tape() as tape:
        y = (x * x).sum()
    g1, g2 = tape.gradient(y, [x, x])
    np.testing.assert_array_equal(g1.numpy(), [2.0, 4.0])
    assert g1.data is not g2.data


def test_an_intermediate_can_be_a_source() -> None:
    x = tg.tensor(2.0)
    with Tape() as tape:
        h = x * x
        y = h * h * x
    gh, gx = tape.gradient(y, (h, x))
    assert (gh.item(), gx.item()) == (16.0, 80.0)  # y = x**5: gx counts the path through h


# ---- gradients have their source's shape and dtype -------------------------------------------
def test_broadcast_gradients_are_summed_to_the_source_shape() -> None:
    w = tg.tensor([[1.0], [2.0]])
    b = tg.tensor(1.0)
    x = tg.tensor([[1.0, 2.0, 3.0]])
    with Tape() as tape:
        y = (w * x + b).sum()
    gw, gb = tape.gradient(y, (w, b))
    assert gw.shape == (2, 1) and gb.shape == ()
    np.testing.assert_array_equal(gw.numpy(), [[6.0], [6.0]])
    assert gb.item() == 6.0


def test_gradients_keep_the_source_dtype() -> None:
    x32 = tg.tensor([1.0, 2.0])
    x64 = tg.tensor([1.0, 2.0], dtype=np.float64)
    with Tape() as tape:
        y = (x32.astype(np.float64) * x64 * 2.5).sum()  # floats never promote silently
    g32, g64 = tape.gradient(y, (x32, x64))
    assert y.dtype == np.float64
    assert g32.dtype == np.float32
    assert g64.dtype == np.float64


# ---- isolation between threads -------------------------------------------------------------
def test_a_tape_does_not_see_ops_on_another_thread() -> None:
    x = tg.tensor(2.0)
    seen: list[bool] = []

    def elsewhere() -> None:
        seen.append(tg.is_recording())
        _ = x * x * x

    with Tape() as tape:
        y = x * 3.0
        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
    assert seen == [False]
    assert len(tape) == 1
    assert tape.gradient(y, x).item() == 3.0


def test_concurrent_tapes_on_two_threads_stay_separate() -> None:
    barrier = threading.Barrier(2)
    results: dict[int, float] = {}

    def train(power: int) -> None:
        x = tg.tensor(2.0)
        with Tape() as tape:
            barrier.wait()  # both tapes are now active at once
            y = x**power
            barrier.wait()
        results[power] = tape.gradient(y, x).item()

    threads = [threading.Thread(target=train, args=(p,)) for p in (2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {2: 4.0, 3: 12.0}


# ---- memory -------------------------------------------------------------------------
def test_gradient_releases_the_intermediates_of_a_non_persistent_tape() -> None:
    x = tg.tensor(np.ones(1000))
    with Tape() as tape:
        h = tg.tanh(x)
        z = h * h
        y = z.sum()
    refs = [weakref.ref(h), weakref.ref(z)]
    del h, z
    gc.collect()
    assert all(r() is not None for r in refs)  # the tape keeps them for the backward pass
    tape.gradient(y, x)
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert len(tape) == 0


def test_a_persistent_tape_keeps_intermediates_until_closed() -> None:
    x = tg.tensor(np.ones(10))
    with Tape(persistent=True) as tape:
        h = tg.exp(x)
        y = h.sum()
    ref = weakref.ref(h)
    del h
    tape.gradient(y, x)
    gc.collect()
    assert ref() is not None
    tape.close()
    gc.collect()
    assert ref() is None
