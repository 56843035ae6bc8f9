"""Small helpers shared by several test modules (not a test module itself)."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

import tapegrad as tg
from tapegrad import Tensor


def line_after() -> int:
    """The number of the caller's next line (where the failing op is written)."""
    return sys._getframe(1).f_lineno + 1


def assert_same(actual: Any, expected: Any) -> None:
    """Same pytree structure; every array leaf bitwise equal with the same dtype and shape."""
    assert tg.tree.structure(actual) == tg.tree.structure(expected)
    for a, e in zip(tg.tree.leaves(actual), tg.tree.leaves(expected)):
        assert type(a) is type(e)
        if isinstance(e, Tensor | np.ndarray | np.generic):
            a_np = a.numpy() if isinstance(a, Tensor) else np.asarray(a)
            e_np = e.numpy() if isinstance(e, Tensor) else np.asarray(e)
            assert a_np.dtype == e_np.dtype and a_np.shape == e_np.shape
            assert np.array_equal(a_np, e_np, equal_nan=True)
            # Bitwise, not just equal: -0.0 and 0.0, and nan payloads, differ here.
            assert a_np.tobytes() == e_np.tobytes()
        else:
            assert a == e


def log_loss(logits: Tensor, labels: Any) -> Tensor:
    """Unfused cross-entropy from `log_softmax`, for checking the fused `nn.cross_entropy`.

    ``labels`` are class indices: an integer Tensor or array, one per row of ``logits``.
    """
    n = logits.shape[0]
    return -tg.log_softmax(logits, axis=1)[np.arange(n), labels].mean()
