"""`where` on large arrays takes a bit-masking path; it must equal NumPy's where exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tapegrad as tg

SHAPE = (256, 128)  # above the size where the bit-masking path takes over


def _special(rng: np.random.Generator, dtype: type) -> Any:
    a: Any = rng.standard_normal(SHAPE).astype(dtype)
    a[0, :5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["array-zero", "zero-array", "array-array", "array-scalar", "scalar-array", "array-negzero"])
def test_where_equals_numpy_bit_for_bit(dtype: type, case: str) -> None:
    rng = np.random.default_rng(0)
    a, b = _special(rng, dtype), _special(rng, dtype)[::-1].copy()
    c = rng.random(SHAPE) > 0.5
    x: Any
    y: Any
    x, y = {
        "array-zero": (a, 0),
        "zero-array": (0, a),
        "array-array": (a, b),
        "array-scalar": (a, 2.5),
        "scalar-array": (1.5, a),
        "array-negzero": (a, -0.0),
    }[case]
    got = tg.where(tg.tensor(c), tg.tensor(x) if isinstance(x, np.ndarray) else x,
                   tg.tensor(y) if isinstance(y, np.ndarray) else y).data
    expected = np.where(c, x, y)
    assert got.dtype == expected.dtype
    assert got.tobytes() == expected.tobytes()


def test_large_relu_gradient_matches_the_mask() -> None:
    rng = np.random.default_rng(1)
    x = tg.tensor(rng.standard_normal(SHAPE).astype(np.float32))
    with tg.Tape() as tape:
        y = (tg.nn.relu(x) * 3.0).sum()
    g = tape.gradient(y, x)
    np.testing.assert_array_equal(g.numpy(), np.where(x.numpy() > 0, 3.0, 0.0).astype(np.float32))
    assert g.dtype == np.float32
