"""The `Tensor` value: immutability, identity, operators, dtypes (NEP 50), conversions."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tape, Tensor


# ---- an immutable value, hashed by identity ---------------------------------------------
def test_a_tensor_is_frozen() -> None:
    x = tg.tensor([1.0, 2.0])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        x.data = np.zeros(2)  # type: ignore[misc]


def test_tensor_copies_its_input() -> None:
    source = np.array([1.0, 2.0])
    x = tg.tensor(source)
    source[0] = 100.0
    assert x.numpy().tolist() == [1.0, 2.0]


def test_numpy_returns_a_copy() -> None:
    x = tg.tensor([1.0, 2.0])
    values = x.numpy()
    values[0] = 100.0
    assert x.numpy().tolist() == [1.0, 2.0]
    assert isinstance(values, np.ndarray)


def test_tensors_hash_by_identity() -> None:
    a = tg.tensor([1.0])
    b = tg.tensor([1.0])
    assert hash(a) == hash(a) and hash(a) != hash(b)
    assert len({a, b, a}) == 2
    assert {a: "a", b: "b"}[b] == "b"


def test_tensor_of_a_tensor_is_the_same_tensor() -> None:
    x = tg.tensor([1.0])
    assert tg.tensor(x) is x
    assert tg.tensor(x, dtype=np.float64).dtype == np.float64


# ---- comparisons give boolean tensors, never recorded --------------------------------------
def test_comparisons_give_boolean_tensors() -> None:
    x = tg.tensor([1.0, 2.0, 3.0])
    y = tg.tensor([3.0, 2.0, 1.0])
    with Tape() as tape:
        results = {
            "<": x < y,
            "<=": x <= y,
            ">": x > y,
            ">=": x >= y,
            "==": x == y,
            "!=": x != y,
        }
    assert len(tape) == 0
    assert {k: v.numpy().tolist() for k, v in results.items()} == {
        "<": [True, False, False],
        "<=": [True, True, False],
        ">": [False, False, True],
        ">=": [False, True, True],
        "==": [False, True, False],
        "!=": [True, False, True],
    }
    assert all(v.dtype == np.bool_ for v in results.values())


def test_comparisons_with_python_scalars_on_either_side() -> None:
    x = tg.tensor([1.0, 2.0])
    assert (x > 1.5).numpy().tolist() == [False, True]
    assert (1.5 < x).numpy().tolist() == [False, True]
    assert (x == 2).numpy().tolist() == [False, True]


def test_logical_ops_combine_masks() -> None:
    a = tg.tensor([True, True, False])
    b = tg.tensor([True, False, False])
    assert tg.logical_and(a, b).numpy().tolist() == [True, False, False]
    assert tg.logical_or(a, b).numpy().tolist() == [True, True, False]
    assert tg.logical_not(a).numpy().tolist() == [False, False, True]


# ---- arithmetic with Python scalars on either side ------------------------------------------
def test_python_scalars_on_either_side() -> None:
    x = tg.tensor([1.0, 2.0])
    assert (x + 1).numpy().tolist() == [2.0, 3.0]
    assert (1 + x).numpy().tolist() == [2.0, 3.0]
    assert (x - 1).numpy().tolist() == [0.0, 1.0]
    assert (1 - x).numpy().tolist() == [0.0, -1.0]
    assert (x * 3).numpy().tolist() == [3.0, 6.0]
    assert (3 * x).numpy().tolist() == [3.0, 6.0]
    assert (x / 2).numpy().tolist() == [0.5, 1.0]
    assert (2 / x).numpy().tolist() == [2.0, 1.0]
    assert (x**2).numpy().tolist() == [1.0, 4.0]
    assert (2**x).numpy().tolist() == [2.0, 4.0]
    assert (-x).numpy().tolist() == [-1.0, -2.0]
    assert (+x) is x
    assert abs(tg.tensor([-1.5, 2.0])).numpy().tolist() == [1.5, 2.0]


def test_numpy_arrays_on_the_left_defer_to_the_tensor() -> None:
    x = tg.tensor([1.0, 2.0])
    y = np.array([10.0, 20.0], dtype=np.float32) * x
    assert isinstance(y, Tensor)
    assert y.numpy().tolist() == [10.0, 40.0]


def test_gradients_flow_through_reflected_operators() -> None:
    x = tg.tensor(2.0)
    with Tape() as tape:
        y = 1.0 / x + 3.0 - x + 2.0**x
    np.testing.assert_allclose(tape.gradient(y, x).item(), -0.25 - 1 + 4 * np.log(2), rtol=1e-6)


# ---- dtypes: NEP 50 -----------------------------------------------------------------------
def test_python_floats_make_float32() -> None:
    assert tg.tensor(1.5).dtype == np.float32
    assert tg.tensor([1.5, 2.0]).dtype == np.float32
    assert tg.tensor([[1.0], [2.0]]).dtype == np.float32


def test_integer_data_stays_int64() -> None:
    assert tg.tensor([1, 2, 3]).dtype == np.int64
    assert tg.tensor(np.array([1, 2], dtype=np.int64)).dtype == np.int64


def test_arrays_keep_their_dtype() -> None:
    assert tg.tensor(np.ones(2)).dtype == np.float64
    assert tg.tensor(np.ones(2, dtype=np.float16)).dtype == np.float16
    assert tg.tensor([1.0], dtype=np.float64).dtype == np.float64
    assert tg.tensor(np.float64(1.0)).dtype == np.float64


def test_python_scalars_are_weak() -> None:
    x = tg.tensor([1.0, 2.0])
    assert (x * 2.5).dtype == np.float32
    assert (2.5 * x).dtype == np.float32
    assert (x + 1).dtype == np.float32
    assert (x**2).dtype == np.float32
    assert tg.where(x > 1, x, 0.0).dtype == np.float32


def test_an_int_tensor_times_a_float_becomes_float() -> None:
    assert (tg.tensor([1, 2]) * 2).dtype == np.int64
    assert (tg.tensor([1, 2]) * 0.5).dtype == np.float64


def test_astype_casts() -> None:
    x = tg.tensor([1.7, -2.2])
    assert x.astype(np.float64).dtype == np.float64
    assert x.astype("int32").numpy().tolist() == [1, -2]
    assert x.astype(np.float32) is x


# ---- conversions and Python protocols -----------------------------------------------------
def test_item_and_python_numbers() -> None:
    assert tg.tensor(2.5).item() == 2.5
    assert tg.tensor([[3]]).item() == 3
    assert isinstance(tg.tensor([[3]]).item(), int)
    assert float(tg.tensor(2.5)) == 2.5
    assert int(tg.tensor(7)) == 7
    assert bool(tg.tensor(1.0)) and not bool(tg.tensor(0.0))


def test_len_and_iteration() -> None:
    x = tg.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert len(x) == 3
    assert [row.numpy().tolist() for row in x] == [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(tg.tensor(1.0))


def test_shape_properties() -> None:
    x = tg.tensor(np.zeros((2, 3, 4)))
    assert (x.shape, x.ndim, x.size, x.device) == ((2, 3, 4), 3, 24, "cpu")
    assert x.T.shape == (4, 3, 2)
    assert x.transpose(1, 0, 2).shape == (3, 2, 4)
    assert x.reshape(6, 4).shape == (6, 4)
    assert x.reshape((4, -1)).shape == (4, 6)


def test_T_transposes_a_matrix() -> None:
    x = tg.tensor([[1.0, 2.0, 3.0]])
    assert x.T.numpy().tolist() == [[1.0], [2.0], [3.0]]


def test_repr_shows_values_dtype_and_device() -> None:
    assert repr(tg.tensor([1.0, 2.5])) == "Tensor([1. , 2.5], dtype=float32, device=cpu)"
    assert repr(tg.tensor(3)) == "Tensor(3, dtype=int64, device=cpu)"
    assert repr(tg.tensor([[1.0, 2.0], [3.0, 4.0]])) == (
        "Tensor([[1., 2.],\n        [3., 4.]], dtype=float32, device=cpu)"
    )


def test_np_asarray_reads_the_values() -> None:
    x = tg.tensor([1.0, 2.0])
    np.testing.assert_array_equal(np.asarray(x), [1.0, 2.0])
    assert np.asarray(x, dtype=np.float64).dtype == np.float64


def test_writing_to_numpy_conversions_never_changes_the_tensor() -> None:
    x = tg.tensor([1.0, 2.0])
    np.array(x)[0] = 100.0
    np.asarray(x)[1] = 100.0
    assert x.numpy().tolist() == [1.0, 2.0]
    view = np.asarray(x, copy=False)
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 100.0


# ---- indexing ---------------------------------------------------------------------------
def test_indexing_follows_numpy() -> None:
    data = np.arange(12.0).reshape(3, 4)
    x = tg.tensor(data)
    cases: list[Any] = [
        1,
        -1,
        (1, 2),
        slice(1, None),
        (slice(None), slice(None, None, 2)),
        (Ellipsis, 0),
        (None, 1),
        np.array([0, 2, 0]),
        [2, 2],
        data > 5,
        (np.array([0, 1]), np.array([3, 2])),
    ]
    for index in cases:
        np.testing.assert_array_equal(x[index].numpy(), data[index], err_msg=repr(index))


def test_indexing_with_tensors() -> None:
    x = tg.tensor([10.0, 20.0, 30.0])
    assert x[tg.tensor([2, 0])].numpy().tolist() == [30.0, 10.0]
    assert x[x > 15.0].numpy().tolist() == [20.0, 30.0]
    assert x[tg.tensor(1)].item() == 20.0


def test_indexing_out_of_range_says_the_shape() -> None:
    with pytest.raises(IndexError, match=r"`getitem`: .* \(tensor shape \(3,\)\)"):
        tg.tensor([1.0, 2.0, 3.0])[5]


def test_gradient_of_repeated_indices_accumulates() -> None:
    x = tg.tensor([1.0, 2.0, 3.0])
    with Tape() as tape:
        y = x[np.array([0, 0, 2, 0])].sum()
    assert tape.gradient(y, x).numpy().tolist() == [3.0, 0.0, 1.0]


# ---- methods that mirror NumPy ---------------------------------------------------------------
def test_reductions_and_argmax() -> None:
    x = tg.tensor([[1.0, 5.0, 2.0], [4.0, 0.0, 6.0]])
    assert x.sum().item() == 18.0
    assert x.sum(axis=1).numpy().tolist() == [8.0, 10.0]
    assert x.mean(axis=0, keepdims=True).numpy().tolist() == [[2.5, 2.5, 4.0]]
    assert x.max().item() == 6.0 and x.min(axis=1).numpy().tolist() == [1.0, 0.0]
    assert x.argmax(axis=1).numpy().tolist() == [1, 2]
    assert x.argmin().item() == 4
    assert x.clip(1.0, 5.0).numpy().tolist() == [[1.0, 5.0, 2.0], [4.0, 1.0, 5.0]]


def test_softmax_is_stable_for_large_inputs() -> None:
    x = tg.tensor([1000.0, 1000.0, -1000.0])
    np.testing.assert_allclose(tg.softmax(x).numpy(), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(tg.logsumexp(x).item(), 1000.0 + np.log(2.0))


def test_logsumexp_of_all_minus_infinity() -> None:
    x = tg.tensor([-np.inf, -np.inf])
    assert tg.logsumexp(x).item() == -np.inf


def test_sigmoid_does_not_overflow() -> None:
    y = tg.sigmoid(tg.tensor([-1000.0, 0.0, 1000.0]))
    assert y.numpy().tolist() == [0.0, 0.5, 1.0]
