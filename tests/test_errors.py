"""Errors teach: each message names the op, the shapes or dtypes, and the fix.

The whole message is pinned, so a change in wording is a deliberate one.
"""

from __future__ import annotations

import re

import attrs
import numpy as np
import pytest

import tapegrad as tg
from tapegrad import Tape

from _support import line_after


@attrs.frozen
class Linear:
    weight: tg.Tensor
    bias: object


# ---- shapes ------------------------------------------------------------------------
def test_matmul_with_the_second_operand_not_transposed_suggests_w_T() -> None:
    x = tg.tensor(np.zeros((32, 784), dtype=np.float32))
    w = tg.tensor(np.zeros((128, 784), dtype=np.float32))
    message = "`matmul`: shapes (32, 784) and (128, 784) do not align; did you mean `x @ w.T`?"
    with pytest.raises(ValueError, match=re.escape(message)):
        x @ w


def test_matmul_with_the_first_operand_not_transposed_suggests_x_T() -> None:
    x = tg.tensor(np.zeros((5, 3)))
    w = tg.tensor(np.zeros((5, 2)))
    message = "`matmul`: shapes (5, 3) and (5, 2) do not align; did you mean `x.T @ w`?"
    with pytest.raises(ValueError, match=re.escape(message)):
        tg.matmul(x, w)


def test_matmul_of_a_scalar_says_to_use_multiplication() -> None:
    message = (
        "`matmul`: shapes () and (2,): matmul needs at least 1-D operands; use `*` to "
        "scale by a scalar"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        tg.tensor(2.0) @ tg.tensor([1.0, 2.0])


def test_shapes_that_do_not_broadcast() -> None:
    a = tg.tensor(np.ones((2, 3)))
    b = tg.tensor(np.ones(4))
    message = (
        "`add`: shapes (2, 3) and (4,) do not broadcast; NumPy's rule matches shapes from "
        "the right, and each pair of sizes must be equal or 1. Reshape one operand "
        "(e.g. x[:, None]) to line them up."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        a + b


def test_mul_names_itself_when_shapes_do_not_broadcast() -> None:
    with pytest.raises(ValueError, match=re.escape("`mul`: shapes (3,) and (2,) do not broadcast;")):
        tg.tensor([1.0, 2.0, 3.0]) * tg.tensor([1.0, 2.0])


def test_reshape_to_the_wrong_number_of_elements() -> None:
    message = "`reshape`: cannot reshape a tensor of shape (2, 3) (6 elements) into shape (4, 2)"
    with pytest.raises(ValueError, match=re.escape(message)):
        tg.tensor(np.ones((2, 3))).reshape(4, 2)


def test_concatenate_with_mismatched_shapes() -> None:
    message = (
        "`concatenate`: shapes [(2, 3), (2, 4)] cannot be joined on axis 0; all other axes must match"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        tg.concatenate([tg.tensor(np.ones((2, 3))), tg.tensor(np.ones((2, 4)))])


def test_squeeze_of_an_axis_that_is_not_one() -> None:
    message = "`squeeze`: axis 1 has length 3, not 1, in shape (1, 3)"
    with pytest.raises(ValueError, match=re.escape(message)):
        tg.tensor(np.ones((1, 3))).squeeze(1)


def test_an_axis_out_of_range() -> None:
    message = "`sum`: axis 2 is out of range for a tensor with 2 dimensions"
    with pytest.raises(ValueError, match=re.escape(message)):
        tg.tensor(np.ones((1, 3))).sum(axis=2)


def test_transpose_with_an_axis_out_of_range() -> None:
    message = "`transpose`: axes (0, 3) are not a permutation of the 2 axes of a tensor of shape (2, 3)"
    with pytest.raises(ValueError, match=re.escape(message)):
        tg.transpose(tg.tensor(np.zeros((2, 3))), (0, 3))


def test_a_float_index() -> None:
    with pytest.raises(TypeError, match=re.escape("`getitem`: a float is not a valid index; use an int")):
        tg.tensor([1.0, 2.0])[1.0]


# ---- dtypes ------------------------------------------------------------------------
def test_differentiating_with_respect_to_an_integer_tensor() -> None:
    labels = tg.tensor([0, 1, 1])
    x = tg.tensor([1.0, 2.0, 3.0])
    with Tape() as tape:
        y = (x * labels).sum()
    message = (
        "Tape.gradient: sources['labels'] has dtype int64; only floating tensors can be "
        "differentiated. Cast it first, e.g. x.astype('float32')."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        tape.gradient(y, {"x": x, "labels": labels})


def test_an_integer_target() -> None:
    x = tg.tensor([1, 2])
    with Tape() as tape:
        y = x.sum()
    message = "Tape.gradient: target has dtype int64; only a floating target can be differentiated"
    with pytest.raises(TypeError, match=re.escape(message)):
        tape.gradient(y, tg.tensor(1.0))


def test_a_non_tensor_in_a_source_pytree_names_its_path() -> None:
    w = tg.tensor(1.0)
    with Tape() as tape:
        y = w * 2
    message = (
        "Tape.gradient: sources['layers'][1].bias is a ndarray, not a Tensor; every leaf of "
        "`sources` must be a Tensor (or None)"
    )
    params = {"layers": [Linear(w, None), Linear(w, np.zeros(1))]}
    with pytest.raises(TypeError, match=re.escape(message)):
        tape.gradient(y, params)


def test_where_with_a_float_condition() -> None:
    x = tg.tensor([1.0, -1.0])
    message = (
        "`where`: condition must be boolean, got dtype float32; compare first, e.g. "
        "where(x > 0, x, 0)"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        tg.where(x, x, 0.0)


def test_an_op_on_a_non_tensor() -> None:
    message = (
        "`exp`: x must be a Tensor, a Python number or an array, got str; wrap it with "
        "tapegrad.tensor(...)"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        tg.exp("1.0")  # type: ignore[arg-type]


def test_tensor_of_a_list_of_tensors_points_to_stack() -> None:
    message = (
        "tensor(): the list holds Tensors; combine them with tapegrad.stack(...) so the "
        "result stays differentiable"
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        tg.tensor([tg.tensor(1.0), tg.tensor(2.0)])


def test_an_unknown_device() -> None:
    with pytest.raises(ValueError, match=re.escape("device must be 'cpu' or 'cuda', got 'gpu'")):
        tg.tensor(1.0, device="gpu")


def test_item_of_a_tensor_with_many_elements() -> None:
    message = (
        "item(): only a tensor with one element can be converted to a Python number, this "
        "one has shape (2,); index or reduce it first"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        tg.tensor([1.0, 2.0]).item()


def test_clip_with_crossed_bounds() -> None:
    with pytest.raises(ValueError, match=re.escape("`clip`: min=1.0 is greater than max=0.0")):
        tg.clip(tg.tensor(0.5), 1.0, 0.0)


# ---- debug_nans names the op -------------------------------------------------------------
def test_debug_nans_names_the_op_that_made_a_nan() -> None:
    x = tg.tensor([1.0, -1.0])
    with tg.debug_nans():
        line = line_after()
        with pytest.raises(FloatingPointError) as info:
            tg.log(x)
    where = f"{__file__}:{line + 1}: tg.log(x)"
    assert str(info.value) == f"`log` produced nan in its forward pass, called at {where}"


def test_debug_nans_names_the_op_that_made_an_infinity() -> None:
    x = tg.tensor([1.0, 0.0])
    with tg.debug_nans():
        line = line_after()
        with pytest.raises(FloatingPointError) as info:
            y = 1.0 / x
    where = f"{__file__}:{line + 1}: y = 1.0 / x"
    assert str(info.value) == f"`div` produced inf in its forward pass, called at {where}"


def test_debug_nans_names_the_op_whose_backward_rule_made_an_infinity() -> None:
    x = tg.tensor([0.0, 4.0])
    with tg.debug_nans():
        with Tape() as tape:
            line = line_after()
            y = tg.sqrt(x).sum()
        with pytest.raises(FloatingPointError) as info:
            tape.gradient(y, x)
    where = f"{__file__}:{line}: y = tg.sqrt(x).sum()"
    message = f"`sqrt` produced inf in its backward pass (cotangent of input 0), called at {where}"
    assert str(info.value) == message


def test_without_debug_nans_a_nan_passes_silently() -> None:
    with np.errstate(invalid="ignore"):
        y = tg.sqrt(tg.tensor([-1.0]))
    assert np.isnan(y.item())
