"""tapegrad's promotion rule, as the README states it: never a silent promotion.

- Python numbers, and NumPy scalars such as ``np.sqrt(2.0)``, are weak: they take
  the tensor's dtype.
- Two floating operands of different widths raise, naming the op, both dtypes
  and the cast (NumPy would compute float32 with float64 in float64).
- An integer or boolean operand beside a floating one takes the floating dtype,
  as in PyTorch and JAX (NumPy would make int64 with float32 float64).
- Matrix products and ``Linear`` refuse integer and boolean inputs, and ``Linear``
  refuses an input whose dtype is not its weights'.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import tapegrad as tg
from tapegrad import nn
from tapegrad.testing import check_grads

F32 = tg.tensor([1.0, 2.0])
F64 = tg.tensor(np.array([3.0, 4.0]))


def mixed(op: str, a: str, b: str) -> str:
    return (
        f"`{op}`: operands have dtypes {a} and {b}; floating dtypes of different widths are never "
        f"promoted silently. Cast one first, e.g. x.astype('{a}') or x.astype('{b}')"
    )


MIXED_FLOATS: list[tuple[str, Callable[[], Any], str]] = [
    ("tensors", lambda: F32 + F64, mixed("add", "float32", "float64")),
    ("a float64 array on the right", lambda: F32 * np.ones(2), mixed("mul", "float32", "float64")),
    ("a float64 array on the left", lambda: np.ones(2) - F32, mixed("sub", "float64", "float32")),
    ("a float16 array", lambda: F32 / np.ones(2, np.float16), mixed("div", "float32", "float16")),
    ("a 0-d float64 tensor", lambda: F32 * tg.tensor(np.float64(2.0)), mixed("mul", "float32", "float64")),
    ("maximum", lambda: tg.maximum(F64, F32), mixed("maximum", "float64", "float32")),
    ("where", lambda: tg.where(F32 > 1, F32, np.zeros(2)), mixed("where", "float32", "float64")),
    ("concatenate", lambda: tg.concatenate([F32, F64]), mixed("concatenate", "float32", "float64")),
    ("stack", lambda: tg.stack([F64, F32]), mixed("stack", "float32", "float64")),
    ("matmul", lambda: tg.tensor(np.ones((2, 3), np.float32)) @ np.ones((3, 2)),
     mixed("matmul", "float32", "float64")),
    ("affine", lambda: tg.affine(np.ones((1, 2)), tg.tensor(np.ones((2, 3), np.float32))),
     mixed("affine", "float64", "float32")),
    ("an affine bias", lambda: tg.affine(np.ones((1, 2)), np.ones((2, 3)), np.ones(3, np.float32)),
     mixed("affine", "float64", "float32")),
]


@pytest.mark.parametrize(("call", "message"), [m[1:] for m in MIXED_FLOATS], ids=[m[0] for m in MIXED_FLOATS])
def test_floats_of_different_widths_raise(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)) as info:
        call()
    assert str(info.value) == message


def test_python_and_numpy_scalars_are_weak() -> None:
    assert (F32 * 2.5).dtype == np.float32
    assert (F32 * np.float64(2.5)).dtype == np.float32
    assert (np.sqrt(2.0) * F32).dtype == np.float32  # NumPy would give float64
    assert (F32 + np.int64(1)).dtype == np.float32
    assert (F64 * np.float32(0.5)).dtype == np.float64
    np.testing.assert_array_equal((F32 * np.sqrt(2.0)).numpy(), np.array([1, 2], np.float32) * np.float32(np.sqrt(2.0)))


def test_an_integer_operand_takes_the_float_dtype() -> None:
    ints = tg.tensor([1, 2])
    assert (ints * F32).dtype == np.float32  # NumPy: float64
    assert (F32 + np.arange(2)).dtype == np.float32
    assert (np.arange(2, dtype=np.uint8) + F32).dtype == np.float32
    assert (F64 - tg.tensor([True, False])).dtype == np.float64
    assert tg.where(F32 > 1, F32, np.zeros(2, np.int64)).dtype == np.float32
    assert tg.concatenate([F32, ints]).dtype == np.float32
    np.testing.assert_array_equal((ints * F32).numpy(), np.array([1, 4], np.float32))
    # Integers among themselves and with Python floats follow NumPy.
    assert (ints * 2).dtype == np.int64
    assert (ints * 0.5).dtype == np.float64


def test_the_gradient_through_an_integer_operand_keeps_the_float_dtype() -> None:
    counts = np.array([1, 2, 3])
    x = tg.tensor([0.5, -1.0, 2.0])
    with tg.Tape() as tape:
        loss = (x * counts + tg.tensor(counts) / x).sum()
    grad = tape.gradient(loss, x)
    assert grad.dtype == np.float32
    xt = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
    torch.autograd.backward((xt * torch.tensor(counts) + torch.tensor(counts) / xt).sum())
    assert xt.grad is not None
    np.testing.assert_allclose(grad.numpy(), xt.grad.numpy(), rtol=1e-6)
    check_grads(lambda x: (x * counts + tg.tensor(counts) / x).sum(), (tg.tensor(np.array([0.5, -1.0, 2.0])),))


def test_a_replayed_step_follows_the_rule_bit_for_bit() -> None:
    def step(x: tg.Tensor, counts: tg.Tensor) -> tg.Tensor:
        return (x * counts).sum() * np.float64(0.5)

    replayed = tg.replay(step)
    counts = tg.tensor([1, 2])
    eager = step(F32, counts)
    for _ in range(3):
        out = replayed(F32, counts)
        assert out.dtype == np.float32
        assert out.numpy().tobytes() == eager.numpy().tobytes()
    assert replayed.replays == 2


INTEGER_PRODUCTS: list[tuple[str, Callable[[], Any], str]] = [
    ("uint8 pixels to matmul", lambda: np.ones((2, 3), np.uint8) @ tg.tensor(np.ones((3, 2), np.float32)),
     "`matmul`: a has dtype uint8, but matrix products need floating operands; cast it first, e.g. "
     "x.astype('float32'), or x.astype('float32') / 255 for pixels"),
    ("integer tensors to matmul", lambda: tg.tensor([[1, 2]]) @ tg.tensor([[1], [2]]),
     "`matmul`: a has dtype int64, but matrix products need floating operands; cast it first, e.g. "
     "x.astype('float32'), or x.astype('float32') / 255 for pixels"),
    ("a boolean weight to affine", lambda: tg.affine(tg.tensor([[1.0]]), np.ones((1, 1), bool)),
     "`affine`: weight has dtype bool, but matrix products need floating operands; cast it first, e.g. "
     "x.astype('float32'), or x.astype('float32') / 255 for pixels"),
]


@pytest.mark.parametrize(
    ("call", "message"), [m[1:] for m in INTEGER_PRODUCTS], ids=[m[0] for m in INTEGER_PRODUCTS]
)
def test_matrix_products_refuse_integers(call: Callable[[], Any], message: str) -> None:
    with pytest.raises(TypeError) as info:
        call()
    assert str(info.value) == message


LAYER = nn.Linear(784, 128)
PARAMS = LAYER.init(tg.random.key(0))


def test_linear_refuses_uint8_pixels() -> None:
    pixels = tg.tensor(np.zeros((32, 784), np.uint8))
    with pytest.raises(TypeError) as info:
        LAYER.apply(PARAMS, pixels)
    assert str(info.value) == (
        "Linear(784, 128): input has dtype uint8, but the weights are float32; cast it first, e.g. "
        "x.astype('float32'), and scale pixels: x.astype('float32') / 255"
    )


def test_linear_refuses_a_float64_batch_for_float32_weights() -> None:
    # NumPy would train the float32 weights in float64, at half the speed.
    with pytest.raises(TypeError) as info:
        LAYER.apply(PARAMS, tg.tensor(np.zeros((32, 784))))
    assert str(info.value) == (
        "Linear(784, 128): input has dtype float64, but the weights are float32; cast it first, e.g. "
        "x.astype('float32')"
    )
    assert LAYER.apply(PARAMS, tg.tensor(np.zeros((32, 784), np.float32))).dtype == np.float32


def test_an_mlp_given_float64_data_raises_instead_of_training_in_float64() -> None:
    model = nn.MLP((4, 3, 2))
    params = model.init(tg.random.key(0))
    with pytest.raises(TypeError, match=re.escape("Linear(4, 3): input has dtype float64")):
        model.apply(params, tg.tensor(np.ones((2, 4))))
